//! The certificate directory in the daemon: the docking API's `encrypt` finds a recipient's
//! certificate in a partner's LDAP directory (slapd, started here) when the vault has none,
//! refuses an invalid one, and `sealctl directory lookup` asks the running daemon through its
//! admin socket (`GET /api/v1/admin/directory/lookup`). Every lookup is audited.

#[path = "../directory/peers.rs"]
mod peers;

use std::process::Command;

use crate::harness::*;

#[test]
fn encrypt_finds_recipients_in_ldap_and_sealctl_asks_the_running_daemon() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let t = tempfile::tempdir().expect("tmp");
    let partner = peers::pki();
    let ca_file = t.path().join("partner-ca.pem");
    std::fs::write(&ca_file, &partner.ca_pem).expect("ca");
    let tls = peers::server_tls(&partner, t.path());
    let zoe = peers::leaf(&partner, "zoe@partner.test", false, false, false);
    let old = peers::leaf(&partner, "old@partner.test", true, false, false);
    let (_ldap, port, _) = peers::slapd(
        t.path(),
        &tls,
        &[
            (
                "zoe",
                "zoe@partner.test",
                "userSMIMECertificate",
                zoe.clone(),
            ),
            ("old", "old@partner.test", "userCertificate;binary", old),
        ],
    );
    let dtoken = create_token(dir.path(), "gw", "encrypt");
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[docking]\ntrust_anchors = \"{}\"\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n",
            ca_file.display()
        ),
    );
    let msg = pki.message("bob@example.org", "zoe@partner.test", "hi", "for zoe");
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/encrypt?from=bob@example.org&to=zoe@partner.test",
        Some(&dtoken),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("application/pkcs7-mime"),
        "encrypted"
    );
    // An expired certificate in the directory is never used: the recipient is missing.
    let msg = pki.message("bob@example.org", "old@partner.test", "hi", "for old");
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/encrypt?from=bob@example.org&to=old@partner.test",
        Some(&dtoken),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));

    // sealctl asks the daemon (which holds the vault) through the admin socket.
    let out = run(Command::new(sealctl())
        .args(["directory", "lookup", "zoe@partner.test", "--data-dir"])
        .arg(dir.path()));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["source"], "ldap", "{v}");
    assert_eq!(v["address"], "zoe@partner.test", "{v}");
    let pem = pem::parse(v["certificate"].as_str().expect("PEM")).expect("PEM");
    assert_eq!(pem.contents(), &zoe[..]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("asking it through"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A local user answers from the vault; nothing found is exit 1 with source none.
    let out = Command::new(sealctl())
        .args(["directory", "lookup", "alice@example.org", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("sealctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (out.status.code(), v["source"].as_str()),
        (Some(0), Some("vault")),
        "{v}"
    );
    let out = Command::new(sealctl())
        .args(["directory", "lookup", "old@partner.test", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("sealctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (out.status.code(), v["source"].as_str()),
        (Some(1), Some("none")),
        "{v}"
    );
    assert!(v["refused"].to_string().contains("not valid now"), "{v}");

    // Blocking through the admin API (here over the admin socket, as root) takes effect at
    // once, for every source; unblocking too.
    let fp = {
        use std::fmt::Write as _;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &zoe);
        d.as_ref().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let sock = dir.path().join("admin.sock");
    let admin = |method: &str, path: &str, body: Option<&str>| -> (String, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&sock)
            .args(["-X", method]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data", b]);
        }
        let out = run(c.arg(format!("http://localhost/api/v1/admin{path}")));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').expect("status");
        (code.to_string(), body.to_string())
    };
    let (code, body) = admin(
        "POST",
        "/directory/blocked",
        Some(&format!(
            "{{\"sha256\":\"{fp}\",\"reason\":\"key compromised\"}}"
        )),
    );
    assert_eq!(code, "200", "{body}");
    let (code, body) = admin("POST", "/directory/blocked", Some("{\"sha256\":\"nope\"}"));
    assert_eq!(code, "400", "{body}");
    let (code, body) = admin("GET", "/directory/blocked", None);
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains(&fp) && body.contains("key compromised"),
        "{body}"
    );
    let msg = pki.message("bob@example.org", "zoe@partner.test", "hi", "for zoe");
    let to_zoe = "/api/v1/encrypt?from=bob@example.org&to=zoe@partner.test";
    assert_eq!(
        d.curl("POST", to_zoe, Some(&dtoken), &[], Some(&msg)).0,
        422
    );
    let (code, body) = admin("GET", "/directory/lookup?address=zoe@partner.test", None);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("blocked"), "{body}");
    let (code, body) = admin("DELETE", &format!("/directory/blocked/{fp}"), None);
    assert_eq!(code, "200", "{body}");
    assert_eq!(
        admin("DELETE", &format!("/directory/blocked/{fp}"), None).0,
        "404"
    );
    assert_eq!(
        d.curl("POST", to_zoe, Some(&dtoken), &[], Some(&msg)).0,
        200
    );

    let audit =
        std::fs::read_to_string(dir.path().join("audit").join("directory.jsonl")).expect("audit");
    assert!(
        audit.contains("\"address\":\"zoe@partner.test\""),
        "{audit}"
    );
    assert!(audit.contains("\"source\":\"ldap\""), "{audit}");
    assert!(!audit.contains("BEGIN CERTIFICATE"), "{audit}");
}

/// The harvested source in the daemon (the file its inbound MX writes, here written before
/// start with the same code), and `sealctl directory` through the admin socket: list and
/// forget harvested certificates, block and unblock, import (pin).
#[test]
fn harvested_certificates_are_used_and_sealctl_manages_them_through_the_daemon() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let t = tempfile::tempdir().expect("tmp");
    let partner = peers::pki();
    let ca_file = t.path().join("partner-ca.pem");
    std::fs::write(&ca_file, &partner.ca_pem).expect("ca");
    let nia = peers::leaf(&partner, "nia@partner.test", false, false, false);
    let cert = sealgate_smime::cert::Certificate::from_der(&nia).expect("cert");
    let mut list = Vec::new();
    sealgate_directory::harvested::add(
        &mut list,
        "nia@partner.test",
        &cert,
        &["aes256-cbc".into()],
        "smtp-inbound 192.0.2.9",
        sealgate_directory::unix_now(),
    );
    // mallory@example.net (pinned, RSA) signed mail advertising RSA-OAEP: encryption to her
    // uses it.
    let mallory = sealgate_smime::cert::Certificate::parse_many(
        &std::fs::read(pki.cert("mallory@example.net")).expect("cert"),
    )
    .expect("cert")
    .remove(0);
    sealgate_directory::harvested::add(
        &mut list,
        "mallory@example.net",
        &mallory,
        &["rsaes-oaep".into(), "aes256-cbc".into()],
        "smtp-inbound 192.0.2.9",
        sealgate_directory::unix_now(),
    );
    sealgate_directory::harvested::save(dir.path(), &list).expect("save");
    let dtoken = create_token(dir.path(), "gw", "encrypt");
    let d = Daemon::start(
        dir.path(),
        &format!("[docking]\ntrust_anchors = \"{}\"\n", ca_file.display()),
    );
    let msg = pki.message("bob@example.org", "nia@partner.test", "hi", "for nia");
    let to_nia = "/api/v1/encrypt?from=bob@example.org&to=nia@partner.test";
    let (code, _, body) = d.curl("POST", to_nia, Some(&dtoken), &[], Some(&msg));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let sealctl_json = |args: &[&str]| -> (Option<i32>, serde_json::Value) {
        let out = Command::new(sealctl())
            .args(["directory"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("sealctl");
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&out.stderr).to_string())
        });
        (out.status.code(), v)
    };
    let (code, v) = sealctl_json(&["lookup", "nia@partner.test"]);
    assert_eq!(
        (code, v["source"].as_str()),
        (Some(0), Some("harvested")),
        "{v}"
    );
    let key_transport = |what: &str| -> String {
        let msg = pki.message("bob@example.org", "mallory@example.net", "hi", what);
        let (code, _, body) = d.curl(
            "POST",
            "/api/v1/encrypt?from=bob@example.org&to=mallory@example.net",
            Some(&dtoken),
            &[],
            Some(&msg),
        );
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let f = t.path().join("enc.eml");
        std::fs::write(&f, &body).expect("write");
        let out = run(Command::new("openssl")
            .args(["cms", "-cmsout", "-print", "-inform", "SMIME", "-in"])
            .arg(&f));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        key_transport("oaep").contains("rsaesOaep"),
        "RSA-OAEP as advertised"
    );
    let (code, v) = sealctl_json(&["harvested"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v[0]["address"], "nia@partner.test", "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v[0]["capabilities"][0], "aes256-cbc", "{v}");
    let fp = v[0]["sha256"].as_str().expect("sha256").to_string();

    // Block through sealctl (the daemon's admin API): at once.
    let (code, v) = sealctl_json(&["block", &fp, "--reason", "lost"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        d.curl("POST", to_nia, Some(&dtoken), &[], Some(&msg)).0,
        422
    );
    let (_, v) = sealctl_json(&["blocked"]);
    assert_eq!(v[0]["sha256"], fp.as_str(), "{v}");
    let (code, v) = sealctl_json(&["unblock", &fp]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        d.curl("POST", to_nia, Some(&dtoken), &[], Some(&msg)).0,
        200
    );

    // Forget: gone at once; a second time is a 404 (exit 1).
    let (code, v) = sealctl_json(&["forget", &fp]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        d.curl("POST", to_nia, Some(&dtoken), &[], Some(&msg)).0,
        422
    );
    let (code, _) = sealctl_json(&["forget", &fp]);
    assert_eq!(code, Some(1));
    let mallory_fp = sealgate_directory::validate::sha256_hex(mallory.der());
    let (code, v) = sealctl_json(&["forget", &mallory_fp]);
    assert_eq!(code, Some(0), "{v}");
    let (_, v) = sealctl_json(&["harvested"]);
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    // Nothing advertised any more: the default key transport.
    let printed = key_transport("pkcs1");
    assert!(
        !printed.contains("rsaesOaep") && printed.contains("rsaEncryption"),
        "{printed}"
    );

    // Import (pin) through the daemon: used at once, listed as pinned.
    let file = t.path().join("nia.der");
    std::fs::write(&file, &nia).expect("write");
    let (code, v) = sealctl_json(&["import", file.to_str().expect("path")]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        d.curl("POST", to_nia, Some(&dtoken), &[], Some(&msg)).0,
        200
    );
    let (code, v) = sealctl_json(&["lookup", "nia@partner.test"]);
    assert_eq!(
        (code, v["source"].as_str()),
        (Some(0), Some("pinned")),
        "{v}"
    );
    let (_, v) = sealctl_json(&["pinned"]);
    assert!(v.to_string().contains(&fp), "{v}");
}

/// The box's directory for partners (`[directory] publish_listen`): our users' certificates
/// by exact address over HTTPS, the protocol `[[directory.http]]` asks, so another box (here
/// `sealctl directory lookup` on another vault) finds them. The attacker enumerates or
/// floods: external certificates are never published, patterns and lists are refused, and a
/// client gets `publish_per_minute` lookups a minute.
#[test]
fn the_box_publishes_its_users_certificates_for_partners_and_nothing_else() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let port = peers::free_port();
    let d = Daemon::start(
        dir.path(),
        &format!("[directory]\npublish_listen = \"127.0.0.1:{port}\"\npublish_per_minute = 12\n"),
    );
    let url = |q: &str| format!("https://127.0.0.1:{port}/lookup?{q}");
    let (code, headers, body) =
        d.curl_url("GET", &url("address=alice@example.org"), None, &[], None);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers.to_ascii_lowercase().contains("no-store"),
        "{headers}"
    );
    let ours = std::fs::read_to_string(pki.cert("alice@example.org")).expect("cert");
    let got = pem::parse(&body).expect("PEM");
    assert_eq!(
        got.contents(),
        pem::parse(ours.as_bytes()).expect("PEM").contents()
    );
    // An external recipient's certificate (stored in the vault) is not republished; an
    // unknown address answers the same.
    let (code, _, none1) = d.curl_url("GET", &url("address=mallory@example.net"), None, &[], None);
    assert_eq!(code, 404);
    let (code, _, none2) = d.curl_url("GET", &url("address=nobody@example.org"), None, &[], None);
    assert_eq!((code, &none1), (404, &none2));
    for q in [
        "address=*@example.org",
        "address=alice@example.org&address=bob@example.org",
        "",
        "address=(mail=*)",
    ] {
        assert_eq!(d.curl_url("GET", &url(q), None, &[], None).0, 400, "{q}");
    }
    assert_eq!(
        d.curl_url(
            "GET",
            &format!("https://127.0.0.1:{port}/"),
            None,
            &[],
            None
        )
        .0,
        404
    );

    // Another box finds alice there: its HTTP directory source, TLS verified against our
    // box's certificate, the certificate chained to our CA.
    let partner = tempfile::tempdir().expect("tmp");
    let pdata = partner.path().join("data");
    run(Command::new(sealctl())
        .args(["vault", "init", "--data-dir"])
        .arg(&pdata)
        .arg("--danger-software-sealer")
        .arg("--recovery-out")
        .arg(partner.path().join("recovery.txt")));
    let settings = partner.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "[docking]\ntrust_anchors = \"{}\"\n[[directory.http]]\nurl = \"https://127.0.0.1:{port}/lookup\"\nca = \"{}\"\n",
            pki.path("ca.crt").display(),
            d.ca_file().display()
        ),
    )
    .expect("settings");
    let out = Command::new(sealctl())
        .args(["directory", "lookup", "alice@example.org", "--data-dir"])
        .arg(&pdata)
        .arg("--settings")
        .arg(&settings)
        .arg("--danger-software-sealer")
        .output()
        .expect("sealctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        (out.status.code(), v["source"].as_str()),
        (Some(0), Some("http")),
        "{v}"
    );

    // Flooding: the client's minute runs out (12 lookups; 9 were made above).
    let codes: Vec<u16> = (0..6)
        .map(|_| {
            d.curl_url("GET", &url("address=bob@example.org"), None, &[], None)
                .0
        })
        .collect();
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
}
