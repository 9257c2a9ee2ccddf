//! URLs by hash, section hashes, bzip2/xz, office and PDF text, the reputation service and
//! clamd, each against a real peer: hashes of the normalised URLs checked with `sha256sum`,
//! ClamAV's `sigtool` for PE section hashes, Python's `bz2`/`lzma` and ClamAV's own
//! `clam.exe.bz2`, documents written by python-docx, openpyxl, python-pptx, odfpy and fpdf2,
//! a reputation service in Python over TLS (certificates by `openssl`), Debian's `clamd`
//! with a database made here from `clam.exe`.
//!
//! Attacker: whoever wrote the message, and a service that is down or not trusted (the mail
//! is never held for it: it is labelled).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    HEAD, b64, eicar, has, hex_digest, python, require_testfiles, scan, with_attachment, write,
};

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sha256_of(s: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", s])
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_string()
}

fn html_mail(text: &str, html: &str) -> Vec<u8> {
    format!(
        "{HEAD}MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"a1\"\r\n\r\n\
--a1\r\nContent-Type: text/plain\r\n\r\n{text}\r\n\
--a1\r\nContent-Type: text/html\r\n\r\n{html}\r\n--a1--\r\n"
    )
    .into_bytes()
}

#[test]
fn urls_are_normalised_and_found_by_hash_and_pe_sections_by_sigtool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    // The database lists the normalised form, hashed by coreutils.
    let bad = "https://phish.example.net/login?id=1";
    let hsb = write(
        t,
        "urls.hsb",
        format!("{}:*:Phish.Test.Url\n", sha256_of(bad)).as_bytes(),
    );
    // The same address written four other ways, in text and in an href.
    for (text, html) in [
        (
            "go to HTTPS://Phish.Example.NET:443/login?id=1#top now",
            "<p>hi</p>",
        ),
        (
            "hello",
            "<a href=\"https://phish.example.net/./x/../login?id=1\">here</a>",
        ),
        (
            "hello",
            "<a href='https://user@phish.example.net./%6cogin?id=1'>x</a>",
        ),
        ("see <https://phish.example.net/login?id=1>.", ""),
    ] {
        let m = write(t, "u.eml", &html_mail(text, html));
        let v = scan(&["--in", &m, "--hashdb", &hsb]);
        assert!(
            has(&v, "malicious-url") && has(&v, "url:Phish.Test.Url"),
            "{text} {html}: {v}"
        );
        assert!(
            !v.to_string().contains("/login"),
            "no URL in the verdict: {v}"
        );
    }
    // Another path is another URL.
    let m = write(
        t,
        "ok.eml",
        &html_mail("https://phish.example.net/other", ""),
    );
    assert!(!has(
        &scan(&["--in", &m, "--hashdb", &hsb]),
        "malicious-url"
    ));

    // PE section hashes: ClamAV's sigtool computes them (its debug lines `Section{N}:
    // SIZE:MD5`), the .mdb is written from them.
    let files = require_testfiles();
    let out = Command::new("sigtool")
        .args(["--debug", "--mdb"])
        .arg(files.join("clam.exe"))
        .output()
        .unwrap_or_else(|e| panic!("sigtool is needed (Debian package clamav): {e}"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mdb: String = all
        .lines()
        .filter_map(|l| l.split_once("Section{").map(|(_, r)| r))
        .filter_map(|r| r.split_once("}: ").map(|(_, sig)| sig.trim().to_string()))
        .map(|sig| format!("{sig}:ClamAV-Test-File.Section\n"))
        .collect();
    assert!(!mdb.is_empty(), "no section from sigtool: {all}");
    let mdb = write(t, "clam.mdb", mdb.as_bytes());
    let clam = std::fs::read(files.join("clam.exe")).expect("clam.exe");
    let m = write(t, "clam.eml", &with_attachment("clam.exe", &clam));
    let v = scan(&["--in", &m, "--hashdb", &mdb]);
    assert!(has(&v, "virus:ClamAV-Test-File.Section"), "{v}");
}

#[test]
fn bzip2_and_xz_are_unpacked_and_their_bombs_labelled() {
    let files = require_testfiles();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let clam = std::fs::read(files.join("clam.exe")).expect("clam.exe");
    let md5 = hex_digest("md5sum", &files.join("clam.exe"));
    let hdb = write(
        t,
        "t.hdb",
        format!("{md5}:{}:ClamAV-Test-File\n", clam.len()).as_bytes(),
    );
    // ClamAV's own clam.exe.bz2.
    let bz = std::fs::read(files.join("clam.exe.bz2")).expect("clam.exe.bz2");
    let m = write(t, "bz.eml", &with_attachment("clam.exe.bz2", &bz));
    assert!(has(
        &scan(&["--in", &m, "--hashdb", &hdb]),
        "virus:ClamAV-Test-File"
    ));
    // EICAR in .xz and .tar.bz2, and 16 MiB of zeros in each (past the ratio), by Python's lzma and bz2.
    write(t, "eicar.com", &eicar());
    let dir = t.to_str().expect("utf8");
    python(&format!(
        "import lzma, bz2, tarfile, os\n\
         os.chdir({dir:?})\n\
         e = open('eicar.com', 'rb').read()\n\
         open('e.xz', 'wb').write(lzma.compress(e))\n\
         with tarfile.open('e.tar.bz2', 'w:bz2') as tf: tf.add('eicar.com')\n\
         z = bytes(16 << 20)\n\
         open('b.xz', 'wb').write(lzma.compress(z, preset=0))\n\
         open('b.bz2', 'wb').write(bz2.compress(z, 1))\n"
    ));
    for name in ["e.xz", "e.tar.bz2"] {
        let data = std::fs::read(t.join(name)).expect("archive");
        let m = write(t, "e.eml", &with_attachment(name, &data));
        assert!(
            has(&scan(&["--in", &m]), "virus:Eicar-Test-Signature"),
            "{name}"
        );
    }
    for name in ["b.xz", "b.bz2"] {
        let data = std::fs::read(t.join(name)).expect("bomb");
        let m = write(t, "b.eml", &with_attachment(name, &data));
        let started = Instant::now();
        let v = scan(&["--in", &m]);
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
        assert!(has(&v, "bomb"), "{name}: {v}");
    }
}

#[test]
fn office_documents_and_pdfs_are_read_for_dlp() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let dir = t.to_str().expect("utf8");
    // PyPI python-docx, openpyxl, python-pptx, odfpy, fpdf2 (cargo xtask test installs them).
    python(&format!(
        "import os\n\
         os.chdir({dir:?})\n\
         card = 'Card 4111 1111 1111 1111 exp 12/29'\n\
         iban = 'Pay DE89 3704 0044 0532 0130 00'\n\
         import docx\n\
         d = docx.Document(); d.add_paragraph('Quarterly note'); p = d.add_paragraph('Card 4111 1111 ')\n\
         p.add_run('1111 1111').bold = True; d.save('c.docx')\n\
         import openpyxl\n\
         wb = openpyxl.Workbook(); ws = wb.active; ws['A1'] = 'iban'; ws['B2'] = iban; wb.save('i.xlsx')\n\
         import pptx\n\
         pr = pptx.Presentation(); s = pr.slides.add_slide(pr.slide_layouts[1])\n\
         s.shapes.title.text = 'Project X update'; pr.save('k.pptx')\n\
         from odf.opendocument import OpenDocumentText\n\
         from odf.text import P\n\
         o = OpenDocumentText(); o.text.addElement(P(text=card)); o.save('c.odt')\n\
         from fpdf import FPDF\n\
         f = FPDF(); f.add_page(); f.set_font('helvetica', size=12); f.cell(text=card); f.output('c.pdf')\n"
    ));
    let settings = write(
        t,
        "s.toml",
        b"[scan]\n[[scan.dlp]]\nname = \"project-x\"\nkeywords = [\"Project X\"]\n",
    );
    for (name, label) in [
        ("c.docx", "dlp:card-number"),
        ("i.xlsx", "dlp:iban"),
        ("k.pptx", "dlp:project-x"),
        ("c.odt", "dlp:card-number"),
        ("c.pdf", "dlp:card-number"),
    ] {
        let data = std::fs::read(t.join(name)).expect("document");
        let m = write(t, "d.eml", &with_attachment(name, &data));
        let v = scan(&[
            "--in",
            &m,
            "--settings",
            &settings,
            "--direction",
            "outbound",
        ]);
        assert!(has(&v, label), "{name}: {v}");
        assert!(!has(&v, "unscannable"), "{name}: {v}");
        // Once, not once per XML member (a threshold of 2 is not reached by one number).
        let hits = v["checks"][3]["evidence"].as_array().map_or(0, Vec::len);
        assert_eq!(hits, 1, "{name}: {v}");
    }
    // A PDF cut in the middle of a stream, and one whose stream does not inflate.
    let pdf = std::fs::read(t.join("c.pdf")).expect("pdf");
    let cut = pdf
        .windows(6)
        .position(|w| w == b"stream")
        .map_or(pdf.len() / 2, |p| p + 20);
    let mut broken = pdf.clone();
    if let Some(p) = broken.windows(9).position(|w| w == b"endstream") {
        for b in &mut broken[p.saturating_sub(40)..p] {
            *b = b'x';
        }
    }
    for (name, data) in [("cut.pdf", &pdf[..cut]), ("broken.pdf", &broken[..])] {
        let m = write(t, "p.eml", &with_attachment(name, data));
        let v = scan(&["--in", &m]);
        assert!(has(&v, "unscannable"), "{name}: {v}");
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, by openssl.
fn tls_pair(t: &Path) {
    let run = |args: &[&str]| {
        let st = Command::new("openssl")
            .current_dir(t)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("openssl is needed (Debian package openssl): {e}"));
        assert!(st.success(), "openssl {args:?}");
    };
    std::fs::write(
        t.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Reputation Test CA",
        "-days",
        "2",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// The reputation service: Python's http.server over TLS; lists `bad`, logs each request.
fn reputation_service(t: &Path, bad: &str) -> (Killed, u16) {
    let script = format!(
        "import http.server, ssl, json, os\n\
         os.chdir({dir:?})\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_POST(self):\n\
         \x20       req = json.loads(self.rfile.read(int(self.headers['Content-Length'])))\n\
         \x20       open('requests.log', 'a').write(json.dumps(req) + '\\n')\n\
         \x20       body = json.dumps({{'malicious': [h for h in req['sha256'] if h == {bad:?}]}}).encode()\n\
         \x20       self.send_response(200)\n\
         \x20       self.send_header('Content-Type', 'application/json')\n\
         \x20       self.send_header('Content-Length', str(len(body)))\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(body)\n\
         \x20   def log_message(self, *a): pass\n\
         srv = http.server.HTTPServer(('127.0.0.1', 0), H)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('leaf.pem', 'leaf.key')\n\
         srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
         print(srv.server_address[1], flush=True)\n\
         srv.serve_forever()\n",
        dir = t.to_str().expect("utf8")
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is needed (Debian package python3): {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port = line.trim().parse().expect("port number");
    (Killed(child), port)
}

#[test]
fn the_reputation_service_is_asked_with_hashes_over_verified_tls() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    tls_pair(t);
    let bad = "https://bad.example.org/x";
    let (_server, port) = reputation_service(t, &sha256_of(bad));
    let ca = t.join("ca.pem");
    let settings = |name: &str, url: &str, ca: Option<&Path>| {
        let ca = ca.map_or(String::new(), |c| format!("reputation_ca = {:?}\n", c));
        write(
            t,
            name,
            format!("[scan]\nreputation_url = {url:?}\n{ca}reputation_batch = 2\nreputation_timeout_ms = 3000\n")
                .as_bytes(),
        )
    };
    let good = settings(
        "good.toml",
        &format!("https://127.0.0.1:{port}/v1/check"),
        Some(&ca),
    );
    let m = write(
        t,
        "m.eml",
        &html_mail(
            "see https://a.example.org/ and https://b.example.org/",
            "<a href=\"HTTPS://BAD.example.org:443/x#f\">x</a>",
        ),
    );
    let v = scan(&["--in", &m, "--settings", &good, "--online"]);
    assert!(has(&v, "malicious-url"), "{v}");
    assert_eq!(v["action"], "quarantine", "{v}");
    // Hashes only, in batches of at most 2: three URLs, two requests.
    let log = std::fs::read_to_string(t.join("requests.log")).expect("log");
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!log.contains("example.org"), "{log}");
    // Offline (no --online): not asked.
    let v = scan(&["--in", &m, "--settings", &good]);
    assert!(!has(&v, "malicious-url"), "{v}");
    // Not trusted (the system's CAs do not know it), or down: labelled, never held.
    let untrusted = settings(
        "u.toml",
        &format!("https://127.0.0.1:{port}/v1/check"),
        None,
    );
    let down = settings("d.toml", "https://127.0.0.1:9/v1/check", Some(&ca));
    for s in [untrusted, down] {
        let v = scan(&["--in", &m, "--settings", &s, "--online"]);
        assert!(has(&v, "reputation-unavailable"), "{v}");
        assert_eq!(v["action"], "accept", "{v}");
    }
}

#[test]
fn clamd_finds_clam_exe_through_its_socket_and_is_not_needed_when_down() {
    let files = require_testfiles();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let clam = std::fs::read(files.join("clam.exe")).expect("clam.exe");
    let md5 = hex_digest("md5sum", &files.join("clam.exe"));
    std::fs::create_dir(t.join("db")).expect("db");
    std::fs::write(
        t.join("db/test.hdb"),
        format!("{md5}:{}:Sealgate.Test.ClamExe\n", clam.len()),
    )
    .expect("hdb");
    let sock = t.join("clamd.sock");
    std::fs::write(
        t.join("clamd.conf"),
        format!(
            "LocalSocket {}\nDatabaseDirectory {}\nForeground yes\nLogFile {}\nPidFile {}\n",
            sock.display(),
            t.join("db").display(),
            t.join("clamd.log").display(),
            t.join("clamd.pid").display()
        ),
    )
    .expect("conf");
    let clamd = Command::new("clamd")
        .arg("--config-file")
        .arg(t.join("clamd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|_| {
            Command::new("/usr/sbin/clamd")
                .arg("--config-file")
                .arg(t.join("clamd.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .unwrap_or_else(|e| panic!("clamd is needed (Debian package clamav-daemon): {e}"));
    let _clamd = Killed(clamd);
    let started = Instant::now();
    while !sock.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "clamd did not start: {}",
            std::fs::read_to_string(t.join("clamd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = write(
        t,
        "s.toml",
        format!("[scan]\nclamd = {:?}\n", sock.display().to_string()).as_bytes(),
    );
    // In a zip, so that clamd (not the shipped hashes) has to open it.
    let dir = t.to_str().expect("utf8");
    write(t, "clam.exe", &clam);
    python(&format!(
        "import zipfile, os\nos.chdir({dir:?})\n\
         with zipfile.ZipFile('c.zip', 'w', zipfile.ZIP_DEFLATED) as z: z.write('clam.exe')\n"
    ));
    let zip = std::fs::read(t.join("c.zip")).expect("zip");
    let m = write(t, "c.eml", &with_attachment("c.zip", &zip));
    let v = scan(&["--in", &m, "--settings", &s, "--online"]);
    assert!(
        has(&v, "virus:Sealgate.Test.ClamExe.UNOFFICIAL") || has(&v, "virus:Sealgate.Test.ClamExe"),
        "{v}"
    );
    assert_eq!(v["action"], "reject", "{v}");
    let clean = write(
        t,
        "ok.eml",
        format!("{HEAD}\r\nhello {}\r\n", b64(b"x")).as_bytes(),
    );
    let v = scan(&["--in", &clean, "--settings", &s, "--online"]);
    assert_eq!(v["action"], "accept", "{v}");
    // Down: labelled, not held.
    let down = write(
        t,
        "d.toml",
        b"[scan]\nclamd = \"/nonexistent/clamd.sock\"\n",
    );
    let v = scan(&["--in", &m, "--settings", &down, "--online"]);
    assert!(has(&v, "clamd-unavailable"), "{v}");
    assert!(!has(&v, "virus"), "{v}");
}
