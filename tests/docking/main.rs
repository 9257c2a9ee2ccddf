//! End-to-end tests of the docking API and the SMTP hand-off against the real `sealgated`
//! binary, with real peers: curl, `openssl cms`, Python `requests`, schemathesis, swaks and
//! aiosmtpd. See `harness.rs` for how the daemon is started.
//!
//! Peers the tests need: Debian `openssl`, `curl`, `swaks`, `libnet-ssleay-perl`,
//! `libio-socket-ssl-perl`, `dovecot-imapd` (the IMAP proxy's upstream and reference), `swtpm`,
//! `chromium`; PyPI `requests`, `schemathesis`, `aiosmtpd`, `playwright`; npm `axe-core` (under
//! `target/webui-node/`). A missing one fails the test with a message naming its package.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod admin;
mod admin_auth;
mod admin_keys;
mod admin_update;
mod box_admin;
mod box_mode;
mod directory;
mod dovecot;
mod harness;
mod imap;
#[path = "../common/ports.rs"]
mod ports;
mod python;
mod queue;
mod scan_train;
mod smtp;
mod verdicts;
mod webui;
mod webui_measure;
mod webui_network;
mod webui_tls;

use std::process::Command;

use harness::{Daemon, Pki, contains, create_token, data_dir_with_keys, header, report, run};

#[test]
fn health_needs_no_credentials_and_everything_else_does() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(dir.path(), "");
    let (code, headers, body) = d.curl("GET", "/api/v1/health", None, &[], None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
        serde_json::json!({"status": "up"})
    );
    assert!(header(&headers, "content-type").is_some_and(|c| c.starts_with("application/json")));
    // The admin port answers health too (the box's readiness check).
    let (code, _, _) = d.curl_url("GET", &d.admin_url("/api/v1/health"), None, &[], None);
    assert_eq!(code, 200);
    for (method, path) in [
        ("POST", "/api/v1/decrypt"),
        ("POST", "/api/v1/encrypt?to=a@b.c"),
        ("POST", "/api/v1/sign"),
        ("POST", "/api/v1/verify"),
        ("GET", "/api/v1/certificates?email=a@b.c"),
        ("GET", "/api/v1/openapi.json"),
    ] {
        let body = if method == "POST" {
            Some(&b"x"[..])
        } else {
            None
        };
        let (code, headers, body) = d.curl(method, path, None, &[], body);
        assert_eq!(code, 401, "{path} without credentials");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/problem+json")
        );
        let p: serde_json::Value = serde_json::from_slice(&body).expect("problem");
        assert_eq!(p["type"], "https://sealgate.example/problems/unauthorized");
        assert_eq!(p["status"], 401);
    }
    // The certificate curl verified is the one whose fingerprint was printed.
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(d.ca_file()));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.trim().ends_with(&d.fingerprint),
        "{printed} vs {}",
        d.fingerprint
    );
}

#[test]
fn decrypt_with_curl_returns_cleartext_and_a_report() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "decrypt");
    let d = Daemon::start(dir.path(), "");
    let clear = pki.message(
        "carol@example.org",
        "alice@example.org",
        "quarterly numbers",
        "the secret is 42",
    );
    let enc = pki.openssl_encrypt(&clear, &["alice@example.org"]);
    assert!(!contains(&enc, "the secret is 42"));

    // Recipients from the message's To field.
    let (code, headers, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&enc));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), Some("message/rfc822"));
    assert!(contains(&body, "the secret is 42"));
    assert!(contains(&body, "Subject: quarterly numbers"));
    let r = report(&headers);
    assert_eq!(r["status"], "decrypted");
    assert_eq!(r["recipients"], serde_json::json!(["alice@example.org"]));
    assert_eq!(r["layers"][0]["layer"], "encrypted");
    assert!(
        r["layers"][0]["recipient"]
            .as_str()
            .unwrap_or_default()
            .contains("alice@example.org")
    );

    // Envelope recipients as to= (here the To field names nobody the box knows).
    let clear = pki.message(
        "carol@example.org",
        "undisclosed-recipients:;",
        "bcc",
        "to bob by envelope",
    );
    let enc = pki.openssl_encrypt(&clear, &["bob@example.org", "carol@example.org"]);
    let (code, headers, body) = d.curl(
        "POST",
        "/api/v1/decrypt?to=bob@example.org",
        Some(&token),
        &[],
        Some(&enc),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(contains(&body, "to bob by envelope"));
    assert_eq!(
        report(&headers)["recipients"],
        serde_json::json!(["bob@example.org"])
    );

    // Not encrypted: byte for byte unchanged.
    let plain = pki.message(
        "carol@example.org",
        "alice@example.org",
        "hello",
        "nothing to hide",
    );
    let (code, headers, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&plain));
    assert_eq!(code, 200);
    assert_eq!(body, plain);
    assert_eq!(report(&headers)["status"], "not-encrypted");

    // Encrypted to someone whose key the box does not hold: 422 problem.
    let enc = pki.openssl_encrypt(
        &pki.message("a@x.org", "carol@example.org", "x", "y"),
        &["carol@example.org"],
    );
    let (code, headers, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&enc));
    assert_eq!(code, 422);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
    let p: serde_json::Value = serde_json::from_slice(&body).expect("problem");
    assert_eq!(
        p["type"],
        "https://sealgate.example/problems/no-matching-key"
    );

    // Every call audited: client, operation, Message-ID, outcome; never content.
    let audit = d.audit();
    let ok = audit
        .iter()
        .find(|a| a["operation"] == "decrypt" && a["outcome"] == "ok")
        .expect("audited");
    assert_eq!(ok["client"], "gw");
    assert_eq!(ok["message_id"], "<quarterly-numbers@test>");
    assert!(ok["duration_ms"].is_u64());
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(!log.contains("secret is 42") && !log.contains(&token));
}

#[test]
fn encrypt_signs_and_encrypts_for_openssl() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "encrypt");
    let d = Daemon::start(dir.path(), "");
    let clear = pki.message(
        "bob@example.org",
        "alice@example.org",
        "outbound",
        "for alice only",
    );
    let (code, headers, body) = d.curl(
        "POST",
        "/api/v1/encrypt?from=bob@example.org&to=alice@example.org",
        Some(&token),
        &[],
        Some(&clear),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(!contains(&body, "for alice only"));
    let r = report(&headers);
    assert_eq!(r["status"], "encrypted");
    assert_eq!(r["encrypted_for"], serde_json::json!(["alice@example.org"]));
    assert_eq!(r["signed_by"], "bob@example.org");
    assert_eq!(r["sender_copy"], true);
    // Alice reads it with openssl, and the signature inside verifies against the test CA.
    let inner = pki.openssl_decrypt(&body, "alice@example.org");
    let content = pki.openssl_verify(&inner);
    assert!(contains(&content, "for alice only"));
    // Bob's copy: the sender's own key opens it too.
    let inner = pki.openssl_decrypt(&body, "bob@example.org");
    assert!(contains(&inner, "for alice only"));

    // An external recipient whose certificate is stored (not a local user).
    let (code, headers, body) = d.curl(
        "POST",
        "/api/v1/encrypt?from=bob@example.org&to=mallory@example.net",
        Some(&token),
        &[],
        Some(&clear),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        report(&headers)["encrypted_for"],
        serde_json::json!(["mallory@example.net"])
    );
    assert!(contains(
        &pki.openssl_decrypt(&body, "mallory@example.net"),
        "for alice only"
    ));

    // Missing certificates: reject (default) names them; send-plain; encrypt-known.
    let q = "/api/v1/encrypt?from=bob@example.org&to=alice@example.org&to=nobody@example.com";
    let (code, headers, body) = d.curl("POST", q, Some(&token), &[], Some(&clear));
    assert_eq!(code, 422);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
    let p: serde_json::Value = serde_json::from_slice(&body).expect("problem");
    assert_eq!(
        p["type"],
        "https://sealgate.example/problems/missing-certificates"
    );
    assert_eq!(p["missing"], serde_json::json!(["nobody@example.com"]));
    let (code, headers, body) = d.curl(
        "POST",
        &format!("{q}&missing=send-plain"),
        Some(&token),
        &[],
        Some(&clear),
    );
    assert_eq!(code, 200);
    assert_eq!(report(&headers)["status"], "not-encrypted");
    assert!(contains(&body, "for alice only"), "plain but signed");
    let (code, headers, body) = d.curl(
        "POST",
        &format!("{q}&missing=encrypt-known"),
        Some(&token),
        &[],
        Some(&clear),
    );
    assert_eq!(code, 200);
    let r = report(&headers);
    assert_eq!(r["status"], "encrypted");
    assert_eq!(r["missing"], serde_json::json!(["nobody@example.com"]));
    assert!(contains(
        &pki.openssl_decrypt(&body, "alice@example.org"),
        "for alice only"
    ));

    // Bad query parameters are 400 problems, not guesses.
    for q in [
        "/api/v1/encrypt?from=bob@example.org",
        "/api/v1/encrypt?to=alice@example.org&missing=maybe",
        "/api/v1/encrypt?to=not-an-address",
        "/api/v1/encrypt?to=alice@example.org&cc=x@y.z",
    ] {
        let (code, _, body) = d.curl("POST", q, Some(&token), &[], Some(&clear));
        assert_eq!(code, 400, "{q}: {}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn sign_verify_and_certificates() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "sign,verify");
    // The test CA as a trust anchor: without one no verdict is `valid`.
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[docking]\ntrust_anchors = \"{}\"\n",
            pki.path("ca.crt").display()
        ),
    );
    let clear = pki.message(
        "alice@example.org",
        "carol@example.org",
        "signed",
        "signed by alice",
    );
    let (code, headers, signed) = d.curl("POST", "/api/v1/sign", Some(&token), &[], Some(&clear));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&signed));
    assert_eq!(report(&headers)["signed_by"], "alice@example.org");
    assert!(contains(&pki.openssl_verify(&signed), "signed by alice"));

    let (code, headers, body) = d.curl("POST", "/api/v1/verify", Some(&token), &[], Some(&signed));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["chain"], "checked");
    assert_eq!(v["verification"]["signers"][0]["signature"], "valid");

    // Tampered content: still 200, verdict invalid.
    let tampered = String::from_utf8_lossy(&signed)
        .replace("signed by alice", "signed by alicE")
        .into_bytes();
    let (code, _, body) = d.curl("POST", "/api/v1/verify", Some(&token), &[], Some(&tampered));
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["valid"], false);

    // Not signed: 422 not-applicable.
    let (code, _, body) = d.curl("POST", "/api/v1/verify", Some(&token), &[], Some(&clear));
    assert_eq!(code, 422);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")["type"],
        "https://sealgate.example/problems/not-applicable"
    );

    // A sender without a key: 422 no-signing-key.
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/sign?from=carol@example.org",
        Some(&token),
        &[],
        Some(&clear),
    );
    assert_eq!(code, 422);

    // What the box knows of an address.
    let (code, _, body) = d.curl(
        "GET",
        "/api/v1/certificates?email=alice@example.org",
        Some(&token),
        &[],
        None,
    );
    assert_eq!(code, 200);
    let c: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(c["box_holds_key"], true);
    assert_eq!(c["certificates"][0]["source"], "local-user");
    assert!(
        c["certificates"][0]["pem"]
            .as_str()
            .unwrap_or_default()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let (_, _, body) = d.curl(
        "GET",
        "/api/v1/certificates?email=mallory@example.net",
        Some(&token),
        &[],
        None,
    );
    let c: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(c["box_holds_key"], false);
    assert_eq!(c["certificates"][0]["source"], "recipient");
    let (_, _, body) = d.curl(
        "GET",
        "/api/v1/certificates?email=nobody@example.com",
        Some(&token),
        &[],
        None,
    );
    let c: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(c["certificates"], serde_json::json!([]));
}

#[test]
fn tokens_scopes_revocation_and_rate_limit() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let decrypt_only = create_token(dir.path(), "decryptor", "decrypt");
    let d = Daemon::start(
        dir.path(),
        "[auth]\nmax_failures = 5\nfailure_window_secs = 60\n",
    );
    let msg = pki.message("a@example.org", "alice@example.org", "s", "b");
    // Missing scope: 403.
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/encrypt?to=alice@example.org",
        Some(&decrypt_only),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    // A token made while the daemon runs works at once; revoked, it is 401.
    let late = create_token(dir.path(), "late", "encrypt");
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/encrypt?to=alice@example.org",
        Some(&late),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 200);
    let list = run(Command::new(harness::sealctl())
        .args(["api-token", "list", "--data-dir"])
        .arg(dir.path()));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(list.as_array().map(|a| a.len()), Some(2));
    assert!(
        !String::from_utf8_lossy(&serde_json::to_vec(&list).unwrap_or_default()).contains(&late)
    );
    run(Command::new(harness::sealctl())
        .args(["api-token", "revoke", "--data-dir"])
        .arg(dir.path())
        .arg("late"));
    let (code, headers, _) = d.curl(
        "POST",
        "/api/v1/encrypt?to=alice@example.org",
        Some(&late),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 401);
    assert!(header(&headers, "www-authenticate").is_some());
    // Wrong tokens and malformed headers: 401 until the limit, then 429 with Retry-After for
    // failed attempts only: a valid token from the same address (a gateway behind the same
    // NAT as the guesser) keeps working.
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/decrypt",
        None,
        &["-H", "Authorization: Basic Zm9vOmJhcg=="],
        Some(&msg),
    );
    assert_eq!(code, 401);
    for _ in 0..3 {
        let (code, _, _) = d.curl(
            "POST",
            "/api/v1/decrypt",
            Some("sgt_wrong"),
            &[],
            Some(&msg),
        );
        assert_eq!(code, 401);
    }
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/decrypt",
        Some(&decrypt_only),
        &[],
        Some(&msg),
    );
    assert_eq!(
        code,
        200,
        "a valid token passes from a blocked address: {}",
        String::from_utf8_lossy(&body)
    );
    for (token, extra) in [
        (Some("sgt_wrong"), &[][..]),
        (None, &[][..]),
        (None, &["-H", "Authorization: Basic Zm9vOmJhcg=="][..]),
    ] {
        let (code, headers, body) = d.curl("POST", "/api/v1/decrypt", token, extra, Some(&msg));
        assert_eq!(code, 429, "{}", String::from_utf8_lossy(&body));
        assert!(
            header(&headers, "retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|s| s >= 1)
        );
    }
    // Still: the good token works, and a missing scope is still 403, not 429.
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/decrypt",
        Some(&decrypt_only),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 200);
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/encrypt?to=alice@example.org",
        Some(&decrypt_only),
        &[],
        Some(&msg),
    );
    assert_eq!(code, 403);
    let audit = d.audit();
    assert!(
        audit
            .iter()
            .filter(|a| a["outcome"] == "unauthorized")
            .count()
            >= 5
    );
    assert!(
        audit
            .iter()
            .any(|a| a["outcome"] == "too-many-failed-attempts")
    );
}

#[test]
fn size_limits_and_malformed_bodies_are_problems_not_crashes() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "decrypt,encrypt,sign,verify");
    let d = Daemon::start(dir.path(), "[docking]\nmax_message_bytes = 100000\n");
    // Over the limit by Content-Length (refused before the body is read) ...
    let big = vec![b'a'; 200_000];
    let (code, _, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&big));
    assert_eq!(code, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")["type"],
        "https://sealgate.example/problems/message-too-large"
    );
    // ... and streamed in chunks without a length.
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/decrypt",
        Some(&token),
        &["-H", "Transfer-Encoding: chunked"],
        Some(&big),
    );
    assert_eq!(code, 413);
    // Empty body.
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/verify",
        Some(&token),
        &["--data-binary", ""],
        None,
    );
    assert_eq!(code, 400);
    // Malformed MIME and CMS: 400/422 problems, never 500.
    let broken_cms = b"To: alice@example.org\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggE=\r\n".to_vec();
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let truncated = {
        let enc = pki.openssl_encrypt(
            &pki.message("a@x.org", "alice@example.org", "t", "b"),
            &["alice@example.org"],
        );
        enc[..enc.len() * 2 / 3].to_vec()
    };
    let der_prefix = vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06];
    for (name, body) in [
        ("broken cms", &broken_cms),
        ("garbage", &garbage),
        ("truncated", &truncated),
        ("der prefix", &der_prefix),
    ] {
        for op in [
            "/api/v1/decrypt",
            "/api/v1/verify",
            "/api/v1/sign?from=alice@example.org",
            "/api/v1/encrypt?to=alice@example.org",
        ] {
            let (code, headers, resp) = d.curl("POST", op, Some(&token), &[], Some(body));
            assert!(
                code == 200 || code == 400 || code == 422,
                "{name} {op}: {code} {}",
                String::from_utf8_lossy(&resp)
            );
            if code != 200 {
                assert_eq!(
                    header(&headers, "content-type"),
                    Some("application/problem+json"),
                    "{name} {op}"
                );
                let p: serde_json::Value = serde_json::from_slice(&resp).expect("problem json");
                assert!(p["detail"].as_str().is_some_and(|s| !s.is_empty()));
            }
        }
    }
    // The worker survived.
    let (code, _, _) = d.curl("GET", "/api/v1/health", None, &[], None);
    assert_eq!(code, 200);
    let enc = pki.openssl_encrypt(
        &pki.message("a@x.org", "alice@example.org", "after", "still works"),
        &["alice@example.org"],
    );
    let (code, _, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&enc));
    assert_eq!(code, 200);
    assert!(contains(&body, "still works"));
}

#[test]
fn setup_token_works_once_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    // A bare data directory: the daemon creates the vault, TLS identity and setup token.
    let mut d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token on the console");
    assert!(d.console.iter().any(|l| l.contains("vault created")));
    // The TLS key is kept in the vault, never in a clear file (identity.rs).
    assert!(dir.path().join("tls/box.crt").exists());
    assert!(!dir.path().join("tls/box.key").exists());
    // The setup token claims the box only through the admin API; the retired
    // `POST /api/v1/setup` answers 410 and spends nothing.
    let json = ["-H", "Content-Type: application/json", "--data"];
    let old = format!("{{\"setup_token\":\"{setup}\"}}");
    let (code, _, resp) = d.curl_url(
        "POST",
        &d.admin_url("/api/v1/setup"),
        None,
        &[json[0], json[1], json[2], &old],
        None,
    );
    assert_eq!(code, 410, "{}", String::from_utf8_lossy(&resp));
    assert!(contains(&resp, "/api/v1/admin/setup"));
    let url = d.admin_url("/api/v1/admin/setup");
    let claim = |token: &str, user: &str| {
        format!(
            "{{\"setup_token\":\"{token}\",\"username\":\"{user}\",\"password\":\"correct horse battery staple\"}}"
        )
    };
    let (code, _, _) = d.curl_url(
        "POST",
        &url,
        None,
        &[json[0], json[1], json[2], &claim("sgt_wrong", "root")],
        None,
    );
    assert_eq!(code, 401);
    let (code, _, resp) = d.curl_url(
        "POST",
        &url,
        None,
        &[json[0], json[1], json[2], &claim(&setup, "root")],
        None,
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&resp));
    let (code, _, resp) = d.curl_url(
        "POST",
        &url,
        None,
        &[json[0], json[1], json[2], &claim(&setup, "evil")],
        None,
    );
    assert_eq!(code, 410, "{}", String::from_utf8_lossy(&resp));

    let (status, rest) = d.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(rest.iter().any(|l| l == "sealgated: stopped"), "{rest:?}");
    assert!(
        std::fs::read_to_string(dir.path().join("log/sealgated.log"))
            .expect("log file")
            .contains("ready")
    );
    // A restart keeps the identity and does not offer setup again.
    let d2 = Daemon::start(dir.path(), "");
    assert!(d2.setup_token.is_none());
    assert_eq!(d2.fingerprint, d.fingerprint);
}

#[test]
fn pinned_client_certificate_authenticates() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    // The gateway's client certificate: self-signed, pinned by SHA-256.
    let gw_key = pki.path("gw.key");
    let gw_crt = pki.path("gw.crt");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "5",
            "-subj",
            "/CN=gateway",
        ])
        .arg("-keyout")
        .arg(&gw_key)
        .arg("-out")
        .arg(&gw_crt));
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&gw_crt));
    let fp = String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_string();
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[[auth.clients]]\nname = \"gw-cert\"\nsha256 = \"{fp}\"\nscopes = [\"decrypt\"]\n"
        ),
    );
    let enc = pki.openssl_encrypt(
        &pki.message("a@x.org", "alice@example.org", "mtls", "via client cert"),
        &["alice@example.org"],
    );
    let cert_args = [
        "--cert",
        gw_crt.to_str().unwrap_or_default(),
        "--key",
        gw_key.to_str().unwrap_or_default(),
    ];
    let (code, _, body) = d.curl("POST", "/api/v1/decrypt", None, &cert_args, Some(&enc));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(contains(&body, "via client cert"));
    let (code, _, _) = d.curl("POST", "/api/v1/sign", None, &cert_args, Some(&enc));
    assert_eq!(code, 403, "scope enforced for certificates too");
    assert!(
        d.audit()
            .iter()
            .any(|a| a["client"] == "cert:gw-cert" && a["outcome"] == "ok")
    );
    // An unpinned certificate does not get through the handshake.
    let other_key = pki.key("carol@example.org");
    let other_crt = pki.cert("carol@example.org");
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/decrypt",
        None,
        &[
            "--cert",
            other_crt.to_str().unwrap_or_default(),
            "--key",
            other_key.to_str().unwrap_or_default(),
        ],
        Some(&enc),
    );
    assert_eq!(code, 0, "handshake refused");
}

#[test]
fn openapi_document_is_served_and_matches_the_repository() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "verify");
    let d = Daemon::start(dir.path(), "");
    let (code, _, body) = d.curl("GET", "/api/v1/openapi.json", Some(&token), &[], None);
    assert_eq!(code, 200);
    let served: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../../firmware/sealgated/openapi.json")).expect("json");
    assert_eq!(served, file);
    assert_eq!(served["openapi"], "3.1.0");
    let (code, headers, _) = d.curl("GET", "/api/v1/nonexistent", Some(&token), &[], None);
    assert_eq!(code, 404);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
}

/// A vendor stores an external recipient's certificate; `encrypt` then encrypts to her and
/// openssl decrypts with her key. Certificates that cannot be encrypted to are refused.
#[test]
fn certificates_can_be_added_for_external_recipients() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "encrypt");
    let verify_only = create_token(dir.path(), "reader", "verify");
    // The box trusts the CA that issued carol's certificate.
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[docking]\ntrust_anchors = \"{}\"\n",
            pki.path("ca.crt").display()
        ),
    );
    let clear = pki.message("bob@example.org", "carol@example.org", "hi", "for carol");
    let q = "/api/v1/encrypt?from=bob@example.org&to=carol@example.org";
    // Unknown to the box at first.
    let (code, _, _) = d.curl("POST", q, Some(&token), &[], Some(&clear));
    assert_eq!(code, 422);

    let carol = std::fs::read(pki.cert("carol@example.org")).expect("cert");
    let pem = ["-H", "Content-Type: application/pem-certificate-chain"];
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/certificates",
        Some(&verify_only),
        &pem,
        Some(&carol),
    );
    assert_eq!(code, 403, "the encrypt scope is needed");
    let (code, headers, body) = d.curl(
        "POST",
        "/api/v1/certificates",
        Some(&token),
        &pem,
        Some(&carol),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let stored: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        stored["stored"][0]["emails"],
        serde_json::json!(["carol@example.org"])
    );

    let (code, headers, body) = d.curl("POST", q, Some(&token), &[], Some(&clear));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        report(&headers)["encrypted_for"],
        serde_json::json!(["carol@example.org"])
    );
    assert!(contains(
        &pki.openssl_decrypt(&body, "carol@example.org"),
        "for carol"
    ));
    let (code, _, body) = d.curl(
        "GET",
        "/api/v1/certificates?email=carol@example.org",
        Some(&token),
        &[],
        None,
    );
    assert_eq!(code, 200);
    let known: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(known["certificates"][0]["source"], "recipient");

    // The CA certificate is refused, and nothing is stored; garbage is a 400.
    let ca = std::fs::read(pki.path("ca.crt")).expect("ca");
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/certificates",
        Some(&token),
        &pem,
        Some(&ca),
    );
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));
    let p: serde_json::Value = serde_json::from_slice(&body).expect("problem");
    assert_eq!(
        p["type"],
        "https://sealgate.example/problems/unusable-certificate"
    );
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/certificates",
        Some(&token),
        &pem,
        Some(b"not a certificate"),
    );
    assert_eq!(code, 400);
    assert!(
        d.audit()
            .iter()
            .any(|e| e["operation"] == "add-certificates" && e["outcome"] == "ok"),
        "the addition is audited"
    );
}

/// Nothing of a request is interpreted before its caller is authenticated and authorised: a
/// bad query string is 401 without credentials, 403 without the scope, 400 only for a caller
/// that may make the call.
#[test]
fn query_strings_are_read_only_after_authentication() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let verify_only = create_token(dir.path(), "reader", "verify");
    let d = Daemon::start(dir.path(), "[auth]\nmax_failures = 1000\n");
    let msg = pki.message("a@example.org", "alice@example.org", "s", "b");
    for (method, path, verify_may) in [
        ("POST", "/api/v1/decrypt?bogus=1", false),
        ("POST", "/api/v1/decrypt?to=not-an-address", false),
        ("POST", "/api/v1/encrypt", false),
        ("POST", "/api/v1/encrypt?to=a@b.c&missing=maybe", false),
        ("POST", "/api/v1/sign?opaque=perhaps", false),
        ("POST", "/api/v1/verify?from=a@b.c&from=d@e.f", true),
        ("POST", "/api/v1/verify?%zz=1", true),
        ("GET", "/api/v1/certificates?email=bad", true),
        ("GET", "/api/v1/certificates", true),
    ] {
        let body = (method == "POST").then_some(&msg[..]);
        let (code, headers, resp) = d.curl(method, path, None, &[], body);
        assert_eq!(
            code,
            401,
            "{method} {path}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(header(&headers, "www-authenticate").is_some());
        let (code, _, _) = d.curl(method, path, Some("sgt_wrong"), &[], body);
        assert_eq!(code, 401, "{method} {path} with a wrong token");
        let (code, _, resp) = d.curl(method, path, Some(&verify_only), &[], body);
        let want = if verify_may { 400 } else { 403 };
        assert_eq!(
            code,
            want,
            "{method} {path} with the verify scope: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    // Bad requests by an authenticated caller are audited under its name.
    assert!(
        d.audit()
            .iter()
            .any(|a| a["client"] == "reader" && a["outcome"] == "bad-request")
    );
}

/// Problem details name no address and no vault text: a decrypt caller gets the same answer
/// for an address whose keys do not fit the message as for one the box holds no key for; the
/// daemon's log says which.
#[test]
fn problems_do_not_tell_which_addresses_hold_keys() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "decrypt");
    let d = Daemon::start(dir.path(), "");
    // For mallory (RSA), whose key the box does not hold; bob's key is EC.
    let enc = pki.openssl_encrypt(
        &pki.message("a@x.org", "mallory@example.net", "m", "for mallory"),
        &["mallory@example.net"],
    );
    let (c1, h1, with_key) = d.curl(
        "POST",
        "/api/v1/decrypt?to=bob@example.org",
        Some(&token),
        &[],
        Some(&enc),
    );
    let (c2, _, without_key) = d.curl(
        "POST",
        "/api/v1/decrypt?to=nobody@example.com",
        Some(&token),
        &[],
        Some(&enc),
    );
    assert_eq!((c1, c2), (422, 422));
    assert_eq!(
        header(&h1, "content-type"),
        Some("application/problem+json")
    );
    let p: serde_json::Value = serde_json::from_slice(&with_key).expect("problem");
    assert_eq!(
        p["type"],
        "https://sealgate.example/problems/no-matching-key"
    );
    assert_eq!(
        String::from_utf8_lossy(&with_key),
        String::from_utf8_lossy(&without_key),
        "the same answer whether or not the box holds a key for the address"
    );
    assert!(!contains(&with_key, "bob") && !contains(&with_key, "nobody"));
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/decrypt?to=alice@example.org",
        Some(&token),
        &[],
        Some(&enc),
    );
    assert_eq!(code, 422);
    assert!(
        !contains(&body, "alice"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let log = std::fs::read_to_string(dir.path().join("log/sealgated.log")).expect("log");
    assert!(
        log.contains("not encrypted to the keys of bob@example.org"),
        "the detail is logged for the administrator"
    );
}

/// Who can call `POST /certificates` (any encrypt token, perhaps a stolen one) cannot make
/// the box encrypt someone's mail to a key of theirs: a certificate without a path to a
/// trust anchor, or from another issuer than the one in use, waits for an administrator;
/// a local user's address is refused. `encrypt` keeps using the original certificate.
#[test]
fn certificate_takeover_is_held_for_an_administrator() {
    let pki = Pki::new();
    pki.add_ca("evil-ca", "Evil CA");
    pki.add_ca("partner-ca", "Partner CA");
    pki.issue("carol-evil", "carol@example.org", "rsa", Some("evil-ca"));
    pki.issue("carol-self", "carol@example.org", "rsa", None);
    pki.issue(
        "carol-partner",
        "carol@example.org",
        "rsa",
        Some("partner-ca"),
    );
    pki.issue(
        "alice-partner",
        "alice@example.org",
        "rsa",
        Some("partner-ca"),
    );
    pki.issue("dave-self", "dave@example.org", "ec", None);
    let mut anchors = std::fs::read(pki.path("ca.crt")).expect("ca");
    anchors.extend(std::fs::read(pki.path("partner-ca.crt")).expect("partner ca"));
    let anchors_file = harness::write(pki.dir.path(), "anchors.pem", &anchors);
    let settings = format!(
        "[docking]\ntrust_anchors = \"{}\"\n",
        anchors_file.display()
    );
    let dir = data_dir_with_keys(&pki);
    let gateway = create_token(dir.path(), "gw", "encrypt");
    let stolen = create_token(dir.path(), "stolen", "encrypt");
    let mut d = Daemon::start(dir.path(), &settings);
    let pem = ["-H", "Content-Type: application/pem-certificate-chain"];
    let post = |d: &Daemon, token: &str, body: &[u8]| {
        let (code, _, body) = d.curl(
            "POST",
            "/api/v1/certificates",
            Some(token),
            &pem,
            Some(body),
        );
        (
            code,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let cert = |stem: &str| std::fs::read(pki.cert(stem)).expect("cert");
    let fingerprint = |stem: &str| {
        let out = run(Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(pki.cert(stem)));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .replace(':', "")
            .to_ascii_lowercase()
    };

    // Carol's certificate from the trusted CA is put to use.
    let (code, a) = post(&d, &gateway, &cert("carol@example.org"));
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["stored"][0]["sha256"], fingerprint("carol@example.org"));
    assert_eq!(a["pending"], serde_json::json!([]));

    // Takeover attempts: an untrusted CA (with its chain), self-signed, another trusted CA.
    let mut evil_chain = cert("carol-evil");
    evil_chain.extend(std::fs::read(pki.path("evil-ca.crt")).expect("evil ca"));
    for (stem, body) in [
        ("carol-evil", evil_chain),
        ("carol-self", cert("carol-self")),
        ("carol-partner", cert("carol-partner")),
    ] {
        let (code, a) = post(&d, &stolen, &body);
        assert_eq!(code, 200, "{stem}: {a}");
        assert_eq!(a["stored"], serde_json::json!([]), "{stem}: {a}");
        assert_eq!(a["pending"][0]["sha256"], fingerprint(stem), "{stem}: {a}");
        assert!(
            a["pending"][0]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{a}"
        );
    }
    // The same certificate again is still pending, not stored.
    let (code, a) = post(&d, &stolen, &cert("carol-self"));
    assert_eq!((code, a["stored"].clone()), (200, serde_json::json!([])));

    // A local user's certificate is never replaced through the API.
    let (code, a) = post(&d, &stolen, &cert("alice-partner"));
    assert_eq!(code, 409, "{a}");
    assert_eq!(
        a["type"],
        "https://sealgate.example/problems/local-user-address"
    );

    // encrypt still uses the original certificates. (One recipient per message: the test
    // PKI gives alice and carol the same issuer and serial.)
    let q = "/api/v1/encrypt?from=bob@example.org&to=carol@example.org";
    let clear = pki.message("bob@example.org", "carol@example.org", "hi", "for carol");
    let (code, headers, body) = d.curl("POST", q, Some(&gateway), &[], Some(&clear));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        report(&headers)["encrypted_for"],
        serde_json::json!(["carol@example.org"])
    );
    assert!(contains(
        &pki.openssl_decrypt(&body, "carol@example.org"),
        "for carol"
    ));
    let to_alice = "/api/v1/encrypt?from=bob@example.org&to=alice@example.org";
    let (code, _, for_alice) = d.curl("POST", to_alice, Some(&gateway), &[], Some(&clear));
    assert_eq!(code, 200);
    assert!(contains(
        &pki.openssl_decrypt(&for_alice, "alice@example.org"),
        "for carol"
    ));
    let enc_alice = harness::write(pki.dir.path(), "enc-alice.eml", &for_alice);
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&enc_alice)
        .arg("-inkey")
        .arg(pki.key("alice-partner"))
        .arg("-recip")
        .arg(pki.cert("alice-partner"))
        .output()
        .expect("openssl");
    assert!(
        !out.status.success(),
        "alice-partner's key must not open alice's mail"
    );
    let enc = harness::write(pki.dir.path(), "enc.eml", &body);
    for stem in ["carol-evil", "carol-self", "carol-partner"] {
        let out = Command::new("openssl")
            .args(["cms", "-decrypt", "-in"])
            .arg(&enc)
            .arg("-inkey")
            .arg(pki.key(stem))
            .arg("-recip")
            .arg(pki.cert(stem))
            .output()
            .expect("openssl");
        assert!(
            !out.status.success(),
            "{stem}'s key must not open carol's mail"
        );
    }

    // A new address with an untrusted certificate waits too: not encrypted to.
    let (code, a) = post(&d, &gateway, &cert("dave-self"));
    assert_eq!(
        (code, a["pending"][0]["sha256"].clone()),
        (200, fingerprint("dave-self").into())
    );
    let to_dave = "/api/v1/encrypt?from=bob@example.org&to=dave@example.org";
    let (code, _, body) = d.curl("POST", to_dave, Some(&gateway), &[], Some(&clear));
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));

    // Every decision is audited.
    let audit = d.audit();
    for outcome in ["stored", "pending", "refused"] {
        assert!(
            audit
                .iter()
                .any(|e| e["operation"] == "certificate" && e["outcome"] == outcome),
            "{outcome} audited"
        );
    }
    assert!(audit.iter().any(|e| e["operation"] == "certificate"
        && e["outcome"] == "pending"
        && e["client"] == "stolen"
        && e["sha256"] == fingerprint("carol-self")));

    // The administrator decides with sealctl while the daemon runs: sealctl asks it through
    // the admin socket (the vault is the daemon's while it runs).
    let sealctl = |args: &[&str]| {
        run(Command::new(harness::sealctl())
            .args(["certs"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--danger-software-sealer"))
    };
    let out = sealctl(&["pending"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin.sock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pending JSON");
    let listed: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["sha256"].as_str())
        .collect();
    assert_eq!(listed.len(), 4, "{list}");
    for stem in ["carol-evil", "carol-self", "carol-partner", "dave-self"] {
        assert!(
            listed.contains(&fingerprint(stem).as_str()),
            "{stem} listed"
        );
    }
    assert!(list[0]["requested_by"].is_string() && list[0]["reason"].is_string());
    let out = sealctl(&["approve", &fingerprint("dave-self")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "approved {} for dave@example.org (restart sealgated if it is not running yet)\n",
            fingerprint("dave-self")
        )
    );
    sealctl(&["reject", &fingerprint("carol-self")]);
    // At once: encrypt refused dave a moment ago (and cached that), now it uses his
    // certificate without a restart.
    let (code, _, body) = d.curl("POST", to_dave, Some(&gateway), &[], Some(&clear));
    assert_eq!(code, 200, "approved: {}", String::from_utf8_lossy(&body));
    assert!(contains(
        &pki.openssl_decrypt(&body, "dave-self"),
        "for carol"
    ));
    // Carol's mail still goes to her original certificate.
    let (code, _, body) = d.curl("POST", q, Some(&gateway), &[], Some(&clear));
    assert_eq!(code, 200);
    assert!(contains(
        &pki.openssl_decrypt(&body, "carol@example.org"),
        "for carol"
    ));
    let left: serde_json::Value =
        serde_json::from_slice(&sealctl(&["pending"]).stdout).expect("pending JSON");
    assert_eq!(left.as_array().map(|a| a.len()), Some(2), "{left}");
    // Stopped, sealctl opens the vault itself (no daemon answers on the socket).
    d.terminate();
    let out = sealctl(&["pending"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("admin.sock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pending JSON");
    assert_eq!(left.as_array().map(|a| a.len()), Some(2), "{left}");
    // Both decisions are in the vault's audit chain, by the socket's uid.
    let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
    let v = sealgate_vault::Vault::open(dir.path(), &mut sealer).expect("vault");
    let audit = v.audit().expect("audit");
    for action in ["admin.cert-approve", "admin.cert-reject"] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor.starts_with("uid:")),
            "{action} audited"
        );
    }
}

/// `sealctl api-token list|create|revoke` ask a running daemon through its admin socket:
/// a revoked token is refused at once, and the output is what it is without a daemon.
#[test]
fn sealctl_api_token_uses_the_running_daemon() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let gateway = create_token(dir.path(), "gw", "verify");
    let tokens = |args: &[&str]| {
        run(Command::new(harness::sealctl())
            .arg("api-token")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path()))
    };
    let offline = tokens(&["list"]).stdout;
    let mut d = Daemon::start(dir.path(), "");
    let q = "/api/v1/certificates?email=alice@example.org";
    let out = tokens(&["list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.sock"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&offline)
    );
    let out = tokens(&["create", "--name", "gw2", "--scope", "verify"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.sock"));
    let gw2 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(gw2.starts_with("sgt_"), "{gw2}");
    assert_eq!(d.curl("GET", q, Some(&gw2), &[], None).0, 200);
    assert_eq!(d.curl("GET", q, Some(&gateway), &[], None).0, 200);
    let out = tokens(&["revoke", "gw"]);
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.sock"));
    assert_eq!(d.curl("GET", q, Some(&gateway), &[], None).0, 401);
    assert_eq!(d.curl("GET", q, Some(&gw2), &[], None).0, 200);
    // An unknown name fails, saying why.
    let out = Command::new(harness::sealctl())
        .args(["api-token", "revoke", "gw", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("sealctl");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token of this name"));
    let listed: serde_json::Value =
        serde_json::from_slice(&tokens(&["list"]).stdout).expect("list JSON");
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], "gw2");
    // The revocation is audited in the vault as the socket's uid.
    d.terminate();
    let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
    let v = sealgate_vault::Vault::open(dir.path(), &mut sealer).expect("vault");
    assert!(
        v.audit()
            .expect("audit")
            .iter()
            .any(|e| e.action == "admin.token-revoke" && e.actor.starts_with("uid:")),
        "audited"
    );
}
