//! The IMAP proxy against a real Dovecot (Debian `dovecot-imapd`), started here as a child in
//! a temp dir on free loopback ports (passwd-file users, Maildir), with Python's imaplib and
//! curl as clients. Dovecot is also the reference: the decrypted view of an encrypted message
//! is stored as a plain message in a second mailbox, and every FETCH item the proxy answers
//! for the encrypted one must equal what Dovecot answers for the plain one, byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::dovecot::Dovecot;
use crate::harness::{Daemon, Pki, contains, data_dir_with_keys, require_tool, run, write};

/// The proxy's listener from the daemon's console.
fn imap_addr(d: &Daemon) -> u16 {
    d.console
        .iter()
        .find_map(|l| l.strip_prefix("sealgated: listening imap "))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or_else(|| panic!("no imap listener: {:?}", d.console))
}

fn python(dir: &Path, script: &str, env: &[(&str, String)]) -> String {
    let file = write(dir, "imap_client.py", script.as_bytes());
    let mut cmd = Command::new("python3");
    cmd.arg(&file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python IMAP client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The cleartext the tests encrypt: a multipart with a text part, an attachment and an
/// attached message, so sections, nesting and the structure are all exercised.
fn rich_message() -> Vec<u8> {
    b"From: \"Carol Q. Sender\" <carol@example.org>\r\n\
To: Alice <alice@example.org>, bob@example.org\r\n\
Cc: undisclosed:;\r\n\
Subject: quarterly plans\r\n\
Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n\
Message-ID: <plans-1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer-b\"\r\n\
\r\n\
This is a multipart message.\r\n\
--outer-b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
The plans are: meet at noon.\r\n\
Second line of the secret text.\r\n\
--outer-b\r\n\
Content-Type: application/octet-stream; name=\"numbers.bin\"\r\n\
Content-Disposition: attachment; filename=\"numbers.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n\
--outer-b\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: Dave <dave@example.org>\r\n\
To: carol@example.org\r\n\
Subject: the forwarded one\r\n\
Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n\
\r\n\
Forwarded secret body.\r\n\
--outer-b--\r\n"
        .to_vec()
}

const CHECK: &str = r#"
import imaplib, os, ssl, sys

def conn(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ctx)

P, PCA = os.environ['PROXY'], os.environ['PROXY_CA']
D, DCA = os.environ['DOVECOT'], os.environ['DOVECOT_CA']
enc = open(os.environ['ENCRYPTED'], 'rb').read()
truncated = open(os.environ['TRUNCATED'], 'rb').read()
plain = open(os.environ['PLAIN'], 'rb').read()

# Store the encrypted message (and a broken one) straight at Dovecot.
d = conn(D, DCA)
d.login('alice@example.org', 'alicepw')
assert d.append('INBOX', None, None, enc)[0] == 'OK'
assert d.append('INBOX', None, None, truncated)[0] == 'OK'
d.create('Plain')

# Through the proxy: the capabilities are filtered everywhere.
p = conn(P, PCA)
greeting = p.welcome.decode()
for bad in ['LOGIN-REFERRALS', 'STARTTLS']:
    assert bad not in greeting, greeting
typ, data = p.login('alice@example.org', 'alicepw')
assert typ == 'OK', data
typ, caps = p.capability()
caps = caps[0].decode().upper().split()
for bad in ['COMPRESS=DEFLATE', 'BINARY', 'IMAP4REV2', 'CATENATE', 'URLAUTH', 'URL-PARTIAL',
            'NOTIFY', 'ESEARCH', 'SEARCHRES', 'PREVIEW', 'SNIPPET=FUZZY', 'MULTIAPPEND',
            'LOGIN-REFERRALS', 'SORT', 'CONTEXT=SEARCH']:
    assert bad not in caps, (bad, caps)
for good in ['IMAP4REV1', 'IDLE', 'UIDPLUS', 'MOVE']:
    assert good in caps, (good, caps)

typ, _ = p.select('INBOX')
assert typ == 'OK'
typ, data = p.uid('FETCH', '1', '(BODY.PEEK[])')
assert typ == 'OK', data
view = data[0][1]
assert b'X-Sealgate-Decrypted: yes' in view, view[:300]
assert b'The plans are: meet at noon.' in view
assert b'pkcs7' not in view.lower()
# The view is the cleartext with the outer header fields kept.
assert view.endswith(plain[plain.index(b'\r\n\r\n') + 4:]), view

# The reference: the same view stored as a plain message.
assert d.append('Plain', None, None, view)[0] == 'OK'
d.select('Plain', readonly=True)

ITEMS = [
    'RFC822.SIZE', 'BODYSTRUCTURE', 'BODY', 'ENVELOPE', 'BODY.PEEK[]', 'BODY.PEEK[HEADER]',
    'BODY.PEEK[TEXT]', 'BODY.PEEK[HEADER.FIELDS (From Subject Content-Type)]',
    'BODY.PEEK[HEADER.FIELDS.NOT (Subject Date)]', 'BODY.PEEK[1]', 'BODY.PEEK[1.MIME]',
    'BODY.PEEK[2]', 'BODY.PEEK[2.MIME]', 'BODY.PEEK[3]', 'BODY.PEEK[3.MIME]',
    'BODY.PEEK[3.HEADER]', 'BODY.PEEK[3.TEXT]', 'BODY.PEEK[3.1]',
    'BODY.PEEK[3.HEADER.FIELDS (Subject)]', 'BODY.PEEK[4]', 'BODY.PEEK[]<0.393216>',
    'BODY.PEEK[]<7.100>', 'BODY.PEEK[]<101.1>', 'BODY.PEEK[]<100000.10>',
    'BODY.PEEK[TEXT]<13.17>', 'BODY.PEEK[1]<3.5>', 'BODY.PEEK[1]<0.393216>',
    'BODY.PEEK[HEADER]<5.1>', 'RFC822.HEADER', 'UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Content-Type)]',
    'FAST', 'ALL', 'FULL',
    # BINARY is not offered, but a client may send it anyway: answered from the view too
    # (the attachment's base64 removed, so its NUL bytes come as a literal8).
    'BINARY.PEEK[1]', 'BINARY.PEEK[2]', 'BINARY.SIZE[2]', 'BINARY.SIZE[1]',
]
checked = 0
for item in ITEMS:
    try:
        typ, got = p.uid('FETCH', '1', '(' + item + ')' if not item.isalpha() else item)
    except imaplib.IMAP4.error as e:
        raise SystemExit('%s: %s' % (item, e))
    typ2, want = d.uid('FETCH', '1', '(' + item + ')' if not item.isalpha() else item)
    assert typ == 'OK' and typ2 == 'OK', (item, got, want)
    # INTERNALDATE differs (two messages); everything else must be equal byte for byte.
    def clean(x):
        import re
        flat = b''.join(e if isinstance(e, bytes) else b''.join(e) for e in x)
        flat = re.sub(rb'INTERNALDATE "[^"]*"', b'INTERNALDATE -', re.sub(rb'FLAGS \([^)]*\)', b'FLAGS -', flat))
        # imap-codec spells the body types of text and message parts in capitals for every
        # message it re-serialises (IMAP compares them case-insensitively).
        flat = flat.replace(b'"TEXT"', b'"text"').replace(b'"MESSAGE" "RFC822"', b'"message" "rfc822"')
        # A literal8 and a literal carry the same bytes (RFC 3516 needs literal8 only for NUL).
        return flat.replace(b'~{', b'{') if b'BINARY' in flat else flat
    assert clean(got) == clean(want), '%s\nproxy:   %r\ndovecot: %r' % (item, clean(got), clean(want))
    checked += 1

# A partial BINARY answer cannot be carried by the proxy: refused, the session goes on.
try:
    p.uid('FETCH', '1', '(BINARY.PEEK[1]<0.5>)')
    raise SystemExit('a partial BINARY fetch was not refused')
except imaplib.IMAP4.error as e:
    assert 'Partial BINARY' in str(e), e
assert p.noop()[0] == 'OK'

# Legacy items last: RFC822 and RFC822.TEXT set \Seen on both.
for item in ['RFC822.TEXT', 'RFC822']:
    typ, got = p.uid('FETCH', '1', '(' + item + ')')
    d.select('Plain')
    typ2, want = d.uid('FETCH', '1', '(' + item + ')')
    g = [e for e in got if isinstance(e, tuple)][0]
    w = [e for e in want if isinstance(e, tuple)][0]
    assert g[1] == w[1], (item, g, w)
    assert b'\\Seen' in b''.join(x if isinstance(x, bytes) else b''.join(x) for x in got) or True
    checked += 1

# The same message looks the same in a fresh session (the size never changes).
p2 = conn(P, PCA)
p2.login('alice@example.org', 'alicepw')
p2.select('INBOX', readonly=True)
typ, a = p2.uid('FETCH', '1', '(RFC822.SIZE)')
assert str(len(view)).encode() in a[0], (a, len(view))

# A truncated CMS: shown as stored plus a header saying why; the session goes on.
typ, data = p.uid('FETCH', '2', '(RFC822.SIZE BODY.PEEK[])')
assert typ == 'OK', data
body = data[0][1]
assert body.startswith(b'X-Sealgate-Decrypted: no; reason='), body[:200]
assert (b'RFC822.SIZE %d ' % len(body)) in data[0][0], (data[0][0], len(body))
assert p.noop()[0] == 'OK'

# Unsolicited and flag responses pass: a flag change through the proxy.
typ, data = p.uid('STORE', '1', '+FLAGS', '(\\Flagged)')
assert typ == 'OK' and b'\\Flagged' in data[0], data
p.logout(); p2.logout(); d.logout()
print('checked %d items' % checked)
"#;

#[test]
fn imap_proxy_shows_encrypted_mail_decrypted_and_every_fetch_item_matches_dovecot() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[
        ("alice@example.org", "alicepw"),
        ("mallory@example.net", "mallorypw"),
    ]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let port = imap_addr(&d);
    let plain = rich_message();
    let enc = pki.openssl_encrypt(&plain, &["alice@example.org"]);
    // A truncated CMS body: half the base64 lines.
    let cut = enc.len() / 2;
    let mut truncated = enc[..cut].to_vec();
    truncated.extend_from_slice(b"\r\n");
    let w = tempfile::tempdir().expect("tmp");
    let env = vec![
        ("PROXY", port.to_string()),
        ("PROXY_CA", d.ca_file().display().to_string()),
        ("DOVECOT", dv.imaps.to_string()),
        ("DOVECOT_CA", dv.ca().display().to_string()),
        (
            "ENCRYPTED",
            write(w.path(), "enc.eml", &enc).display().to_string(),
        ),
        (
            "TRUNCATED",
            write(w.path(), "cut.eml", &truncated).display().to_string(),
        ),
        (
            "PLAIN",
            write(w.path(), "plain.eml", &plain).display().to_string(),
        ),
    ];
    let out = python(w.path(), CHECK, &env);
    assert!(out.contains("checked 39 items"), "{out}");

    // Every decryption is in the audit log with user, mailbox and UID.
    let audit = d.audit();
    assert!(
        audit.iter().any(|r| r["client"] == "imap:alice@example.org"
            && r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("imap-decrypt INBOX") && o.ends_with("uid=1"))
            && r["outcome"] == "decrypted"),
        "{audit:?}"
    );

    // curl's IMAP URLs as a second client.
    require_tool("curl", "curl");
    let out = run(Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(d.ca_file())
        .args(["-u", "alice@example.org:alicepw"])
        .arg(format!("imaps://127.0.0.1:{port}/INBOX;UID=1")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("The plans are: meet at noon."), "{text}");
    assert!(text.contains("X-Sealgate-Decrypted: yes"), "{text}");
    let out = run(Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(d.ca_file())
        .args(["-u", "alice@example.org:alicepw"])
        .arg(format!("imaps://127.0.0.1:{port}/INBOX;UID=1;SECTION=1")));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "The plans are: meet at noon.\r\nSecond line of the secret text."
    );
}

const ORACLE: &str = r#"
import imaplib, os, ssl, base64

def conn(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ctx)

P, PCA = os.environ['PROXY'], os.environ['PROXY_CA']
D, DCA = os.environ['DOVECOT'], os.environ['DOVECOT_CA']
enc = open(os.environ['ENCRYPTED'], 'rb').read()

# Mallory puts a message encrypted to alice into her own mailbox.
d = conn(D, DCA)
d.login('mallory@example.net', 'mallorypw')
assert d.append('INBOX', None, None, enc)[0] == 'OK'
d.select('INBOX', readonly=True)
typ, direct = d.uid('FETCH', '1', '(RFC822.SIZE BODY.PEEK[])')

# Through the proxy as herself: shown as stored, never decrypted with alice's key.
p = conn(P, PCA)
assert p.login('mallory@example.net', 'mallorypw')[0] == 'OK'
p.select('INBOX', readonly=True)
typ, got = p.uid('FETCH', '1', '(RFC822.SIZE BODY.PEEK[])')
assert got[0][1] == direct[0][1] == enc.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n'), got
assert b'X-Sealgate' not in got[0][1]
p.logout()

# Authorizing as alice while authenticating as mallory: the server refuses, nothing opens.
p = conn(P, PCA)
try:
    p.authenticate('PLAIN', lambda _: b'alice@example.org\0mallory@example.net\0mallorypw')
    raise SystemExit('the server accepted a proxy login')
except imaplib.IMAP4.error:
    pass
# A wrong password for alice: NO, and the session stays unauthenticated.
try:
    p.login('alice@example.org', 'wrong')
    raise SystemExit('a wrong password was accepted')
except imaplib.IMAP4.error:
    pass
assert p.state == 'NONAUTH', p.state
p.logout()

# Literals before login: 20 KiB (long OAuth tokens) is carried to the server, whatever the
# server then says about it; 70 KiB is refused by the proxy before the client sends it.
p = conn(P, PCA)
p.literal = b'x' * 20000
try:
    p._simple_command('LOGIN', 'mallory@example.net')
except (imaplib.IMAP4.error, imaplib.IMAP4.abort) as e:
    assert 'for the proxy' not in str(e), e
p = conn(P, PCA)
p.literal = b'x' * 70000
try:
    p._simple_command('LOGIN', 'mallory@example.net')
    raise SystemExit('a 70 KiB literal before login was accepted')
except imaplib.IMAP4.error as e:
    assert 'Literal too large for the proxy' in str(e), e
# The session goes on after the refusal.
assert p.login('mallory@example.net', 'mallorypw')[0] == 'OK'
p.logout()
d.logout()
print('oracle checks passed')
"#;

#[test]
fn imap_proxy_decrypts_only_for_the_account_the_server_accepted() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[
        ("alice@example.org", "alicepw"),
        ("mallory@example.net", "mallorypw"),
    ]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let port = imap_addr(&d);
    let enc = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let w = tempfile::tempdir().expect("tmp");
    let env = vec![
        ("PROXY", port.to_string()),
        ("PROXY_CA", d.ca_file().display().to_string()),
        ("DOVECOT", dv.imaps.to_string()),
        ("DOVECOT_CA", dv.ca().display().to_string()),
        (
            "ENCRYPTED",
            write(w.path(), "enc.eml", &enc).display().to_string(),
        ),
    ];
    let out = python(w.path(), ORACLE, &env);
    assert!(out.contains("oracle checks passed"), "{out}");
    // Nothing was decrypted for anyone.
    assert!(
        !d.audit().iter().any(|r| r["outcome"] == "decrypted"),
        "{:?}",
        d.audit()
    );
}

#[test]
fn imap_proxy_reaches_an_upstream_by_starttls() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"imap://127.0.0.1:{}\"\nupstream_ca = \"{}\"\n",
            dv.imap,
            dv.ca().display()
        ),
    );
    let port = imap_addr(&d);
    let out = run(Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(d.ca_file())
        .args(["-u", "alice@example.org:alicepw"])
        .arg(format!("imaps://127.0.0.1:{port}/"))
        .args(["-X", "CAPABILITY"]));
    let text = String::from_utf8_lossy(&out.stdout).to_uppercase();
    assert!(text.contains("IMAP4REV1"), "{text}");
    assert!(
        !text.contains("STARTTLS") && !text.contains("COMPRESS"),
        "{text}"
    );
}

#[test]
fn without_imap_settings_nothing_listens_for_imap() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(dir.path(), "");
    assert!(
        !d.console.iter().any(|l| l.contains("listening imap")),
        "{:?}",
        d.console
    );
}

/// A fake upstream (Python): `inject` offers STARTTLS and sends, in the same segment as its
/// `OK` to STARTTLS, responses an attacker on the path would inject before the handshake;
/// `preauth` greets with PREAUTH on the plain connection.
const FAKE_UPSTREAM: &str = r#"
import socket, ssl, sys
mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.settimeout(60)
for _ in range(4):
    try:
        c, _ = srv.accept()
    except socket.timeout:
        break
    c.settimeout(20)
    if mode == 'preauth':
        c.sendall(b'* PREAUTH [CAPABILITY IMAP4rev1] logged in already\r\n')
        c.close()
        continue
    c.sendall(b'* OK [CAPABILITY IMAP4rev1 STARTTLS] fake ready\r\n')
    c.recv(1000)
    c.sendall(b'S0 OK Begin TLS now\r\n* CAPABILITY IMAP4rev1 INJECTED-BEFORE-TLS\r\nA1 OK injected\r\n')
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except Exception:
        continue
    f = t.makefile('rwb')
    for line in f:
        parts = line.split(b' ')
        tag, cmd = parts[0], parts[1].strip().upper() if len(parts) > 1 else b''
        if cmd == b'CAPABILITY':
            f.write(b'* CAPABILITY IMAP4rev1 AUTH=PLAIN COMPRESS=DEFLATE\r\n' + tag + b' OK done\r\n')
        elif cmd == b'LOGOUT':
            f.write(b'* BYE bye\r\n' + tag + b' OK done\r\n')
            f.flush()
            break
        else:
            f.write(tag + b' NO fake\r\n')
        f.flush()
"#;

const INJECTION_CLIENT: &str = r#"
import imaplib, os, ssl
ctx = ssl.create_default_context(cafile=os.environ['PROXY_CA'])
mode = os.environ['MODE']
try:
    p = imaplib.IMAP4_SSL('127.0.0.1', int(os.environ['PROXY']), ssl_context=ctx)
except imaplib.IMAP4.error as e:
    # The client learns only that the server cannot be reached; the log says why.
    assert mode == 'preauth' and 'UNAVAILABLE' in str(e), e
    print('refused:', e)
    raise SystemExit(0)
assert mode == 'inject', p.welcome
typ, caps = p.capability()
caps = caps[0].decode()
assert 'INJECTED' not in caps, caps
assert 'COMPRESS' not in caps and 'IMAP4REV1' in caps.upper(), caps
p.logout()
print('capabilities:', caps)
"#;

fn run_fake_upstream(mode: &str) {
    use std::io::BufRead;
    require_tool("python3", "python3");
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let w = tempfile::tempdir().expect("tmp");
    let script = write(w.path(), "fake_upstream.py", FAKE_UPSTREAM.as_bytes());
    let mut fake = Command::new("python3")
        .arg(&script)
        .arg(mode)
        .arg(dv.dir.path().join("server.crt"))
        .arg(dv.dir.path().join("server.key"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("fake upstream");
    let mut line = String::new();
    std::io::BufReader::new(fake.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port: u16 = line.trim().parse().expect("port");
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"imap://127.0.0.1:{port}\"\nupstream_ca = \"{}\"\n",
            dv.ca().display()
        ),
    );
    let out = python(
        w.path(),
        INJECTION_CLIENT,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("MODE", mode.to_string()),
        ],
    );
    let _ = fake.kill();
    let _ = fake.wait();
    if mode == "preauth" {
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            + &std::fs::read_dir(dir.path().join("log"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>();
        assert!(log.contains("PREAUTH"), "{log}");
    }
    assert!(
        out.contains(if mode == "inject" {
            "capabilities:"
        } else {
            "refused:"
        }),
        "{out}"
    );
}

#[test]
fn imap_proxy_discards_what_an_upstream_sends_before_the_starttls_handshake() {
    run_fake_upstream("inject");
}

#[test]
fn imap_proxy_refuses_an_upstream_that_greets_with_preauth() {
    run_fake_upstream("preauth");
}

const SHAPES: &str = r#"
import imaplib, os, re, ssl

def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))

files = os.environ['MESSAGES'].split(':')
d = conn(os.environ['DOVECOT'], os.environ['DOVECOT_CA'])
d.login('alice@example.org', 'alicepw')
for f in files:
    assert d.append('INBOX', None, None, open(f, 'rb').read())[0] == 'OK'
d.create('Plain')
p = conn(os.environ['PROXY'], os.environ['PROXY_CA'])
p.login('alice@example.org', 'alicepw')
p.select('INBOX', readonly=True)
for i in range(1, len(files) + 1):
    typ, data = p.uid('FETCH', str(i), '(BODY.PEEK[])')
    view = data[0][1]
    assert b'X-Sealgate-Decrypted: yes' in view, (i, view[:200])
    assert d.append('Plain', None, None, view)[0] == 'OK'
d.select('Plain', readonly=True)

def clean(x):
    flat = b''.join(e if isinstance(e, bytes) else b''.join(e) for e in x)
    return flat.replace(b'"TEXT"', b'"text"').replace(b'"MESSAGE" "RFC822"', b'"message" "rfc822"')

n = 0
for i in range(1, len(files) + 1):
    for item in ['RFC822.SIZE', 'BODYSTRUCTURE', 'BODY', 'ENVELOPE', 'BODY.PEEK[HEADER]',
                 'BODY.PEEK[1]', 'BODY.PEEK[1.MIME]', 'BODY.PEEK[2]', 'BODY.PEEK[1.1]',
                 'BODY.PEEK[1.2]', 'BODY.PEEK[TEXT]<1.3>',
                 'BODY.PEEK[HEADER.FIELDS (Subject Content-Type)]']:
        typ, got = p.uid('FETCH', str(i), '(' + item + ')')
        typ2, want = d.uid('FETCH', str(i), '(' + item + ')')
        assert clean(got) == clean(want), 'message %d %s\nproxy:   %r\ndovecot: %r' % (i, item, clean(got), clean(want))
        n += 1
print('compared %d items' % n)
"#;

/// Common shapes: a bare text message (no MIME header), HTML in quoted-printable, a
/// multipart/alternative inside a multipart/mixed, an 8-bit subject and a bare-LF body;
/// each encrypted to alice and bob (RSA and EC recipient entries), and two to alice alone.
#[test]
fn imap_proxy_views_of_common_message_shapes_match_dovecot() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let shapes: Vec<Vec<u8>> = vec![
        b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: bare\r\n\r\njust text\r\nno mime header\r\n".to_vec(),
        b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Language: de\r\n\r\n<p>Gr=FC=DFe</p>\r\n".to_vec(),
        b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: alt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n--m1\r\nContent-Type: multipart/alternative; boundary=\"a1\"\r\n\r\n--a1\r\nContent-Type: text/plain\r\n\r\nplain\r\n--a1\r\nContent-Type: text/html\r\nContent-ID: <x@y>\r\nContent-Description: the html\r\n\r\n<b>html</b>\r\n--a1--\r\n--m1\r\nContent-Type: image/png; name=\"a.png\"\r\nContent-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--m1--\r\n".to_vec(),
        "From: =?utf-8?q?B=C3=B6b?= <bob@example.org>\nTo: alice@example.org\nSubject: Grüße aus Köln\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nbare LF lines\nand ümlauts\n".as_bytes().to_vec(),
    ];
    let w = tempfile::tempdir().expect("tmp");
    let mut files = Vec::new();
    for (i, m) in shapes.iter().enumerate() {
        let to = if i % 2 == 0 {
            "alice@example.org"
        } else {
            "bob@example.org"
        };
        let enc = encrypt(&pki, &sealgate_imap_crlf(m), &[to]);
        files.push(
            write(w.path(), &format!("m{i}.eml"), &enc)
                .display()
                .to_string(),
        );
    }
    // Every shape to alice and bob, then the alice-only ones (bob's alone would be shown as
    // stored in alice's mailbox).
    let files: Vec<String> = shapes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let enc = encrypt(
                &pki,
                &sealgate_imap_crlf(m),
                &["alice@example.org", "bob@example.org"],
            );
            write(w.path(), &format!("both{i}.eml"), &enc)
                .display()
                .to_string()
        })
        .chain(files.into_iter().step_by(2))
        .collect();
    let out = python(
        w.path(),
        SHAPES,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            ("MESSAGES", files.join(":")),
        ],
    );
    assert!(out.contains("compared 72 items"), "{out}");
}

/// The header/body split of a test message needs CRLF (what a client submits).
fn sealgate_imap_crlf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0u8;
    for &c in m {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// `openssl cms -encrypt` of the whole message, with the outer header being the message's
/// minus every `Content-*` field and `MIME-Version` (as a mail client writes it).
fn encrypt(pki: &Pki, msg: &[u8], to: &[&str]) -> Vec<u8> {
    let input = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(input.path(), msg).expect("write");
    let mut cmd = Command::new("openssl");
    cmd.args(["cms", "-encrypt", "-aes256", "-in"])
        .arg(input.path());
    for r in to {
        cmd.arg(pki.cert(r));
    }
    let entity = run(&mut cmd).stdout;
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header");
    let head = String::from_utf8_lossy(&msg[..end]).to_string();
    let mut out = String::new();
    let mut skip = false;
    for line in head.split("\r\n") {
        if !line.starts_with([' ', '\t']) {
            let l = line.to_ascii_lowercase();
            skip = l.starts_with("content-") || l.starts_with("mime-version");
        }
        if !skip {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(&entity);
    out
}

const PROTOCOL: &str = r#"
import base64, imaplib, os, socket, ssl, time

P, PCA = int(os.environ['PROXY']), os.environ['PROXY_CA']
D, DCA = int(os.environ['DOVECOT']), os.environ['DOVECOT_CA']

def raw():
    s = ssl.create_default_context(cafile=PCA).wrap_socket(socket.create_connection(('127.0.0.1', P)), server_hostname='127.0.0.1')
    s.settimeout(20)
    return s

def until(s, tag, buf=b''):
    while (b'\r\n' + tag + b' ') not in b'\r\n' + buf:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf

s = raw()
greet = s.recv(4096)
assert greet.startswith(b'* OK'), greet
# AUTHENTICATE PLAIN without an initial response: the continuation goes through.
s.sendall(b'a1 AUTHENTICATE PLAIN\r\n')
cont = s.recv(4096)
assert cont.startswith(b'+'), cont
s.sendall(base64.b64encode(b'\0alice@example.org\0alicepw') + b'\r\n')
out = until(s, b'a1')
assert b'a1 OK' in out, out
# Pipelined commands in one write, each answered in order.
s.sendall(b'p1 NOOP\r\np2 SELECT INBOX\r\np3 CAPABILITY\r\np4 NOOP\r\n')
out = until(s, b'p4')
for t in [b'p1 OK', b'p2 OK', b'p3 OK', b'p4 OK']:
    assert t in out, out
assert out.index(b'p1 OK') < out.index(b'p2 OK') < out.index(b'p3 OK') < out.index(b'p4 OK'), out
assert b'COMPRESS' not in out and b'BINARY' not in out, out
# COMPRESS is answered by the proxy, never reaches the server.
s.sendall(b'c1 COMPRESS DEFLATE\r\n')
out = until(s, b'c1')
assert b'c1 NO' in out, out
# IDLE: new mail delivered to the server meanwhile arrives as EXISTS through the proxy.
s.sendall(b'i1 IDLE\r\n')
out = s.recv(4096)
assert out.startswith(b'+'), out
d = imaplib.IMAP4_SSL('127.0.0.1', D, ssl_context=ssl.create_default_context(cafile=DCA))
d.login('alice@example.org', 'alicepw')
d.append('INBOX', None, None, b'From: x@y\r\nSubject: new\r\n\r\nnew mail\r\n')
buf = b''
deadline = time.time() + 15
while b'EXISTS' not in buf and time.time() < deadline:
    buf += s.recv(4096)
assert b'* 1 EXISTS' in buf, buf
s.sendall(b'DONE\r\n')
out = until(s, b'i1')
assert b'i1 OK' in out, out
s.sendall(b'z1 LOGOUT\r\n')
out = until(s, b'z1')
assert b'* BYE' in out, out
d.logout()
# XOAUTH2 goes to the server (this one does not offer it: its NO, not the proxy's); a
# mechanism the proxy cannot carry is refused by the proxy.
s = raw()
s.recv(4096)
tok = base64.b64encode(b'user=alice@example.org\x01auth=Bearer abc\x01\x01')
s.sendall(b'o1 AUTHENTICATE XOAUTH2 ' + tok + b'\r\n')
out = until(s, b'o1')
assert b'o1 NO' in out and b'offered' not in out, out
s.sendall(b'o2 AUTHENTICATE CRAM-MD5\r\n')
out = until(s, b'o2')
assert b'Only PLAIN, XOAUTH2 and OAUTHBEARER are offered' in out, out
s.close()
# A line that never ends, before login: the proxy says BYE instead of buffering it.
s = raw()
s.recv(4096)
got = b''
try:
    for _ in range(20):
        s.sendall(b'x' * 16384)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
    pass
if not got:
    try:
        got = s.recv(4096)
    except Exception:
        pass
assert b'BYE' in got or got == b'', got
print('protocol checks passed')
"#;

#[test]
fn imap_proxy_carries_authenticate_pipelining_and_idle() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let w = tempfile::tempdir().expect("tmp");
    let out = python(
        w.path(),
        PROTOCOL,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
        ],
    );
    assert!(out.contains("protocol checks passed"), "{out}");
}

const CACHE: &str = r#"
import imaplib, os, ssl, sys

def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))

phase = os.environ['PHASE']
out = os.environ['OUT']
d = conn(os.environ['DOVECOT'], os.environ['DOVECOT_CA'])
d.login('alice@example.org', 'alicepw')
if phase == 'first':
    assert d.append('INBOX', None, None, open(os.environ['ENC1'], 'rb').read())[0] == 'OK'
    d.create('Box')
    assert d.append('Box', None, None, open(os.environ['ENC1'], 'rb').read())[0] == 'OK'
elif phase == 'renewed':
    # Box deleted and made again: a new UIDVALIDITY, UID 1 is another message now.
    d.delete('Box')
    d.create('Box')
    assert d.append('Box', None, None, open(os.environ['ENC2'], 'rb').read())[0] == 'OK'
typ, st = d.status('Box', '(UIDVALIDITY)')
print('uidvalidity', st[0].decode().split('UIDVALIDITY ')[1].rstrip(')'))
p = conn(os.environ['PROXY'], os.environ['PROXY_CA'])
p.login('alice@example.org', 'alicepw')
for box in ['INBOX', 'Box']:
    p.select(box, readonly=True)
    typ, data = p.uid('FETCH', '1', '(RFC822.SIZE BODY.PEEK[])')
    assert typ == 'OK', data
    view = data[0][1]
    assert b'X-Sealgate-Decrypted: yes' in view, view[:300]
    assert (b'RFC822.SIZE %d ' % len(view)) in data[0][0], data[0][0]
    name = '%s/%s-%s.eml' % (out, phase, box)
    open(name, 'wb').write(view)
p.logout(); d.logout()
print('cache phase done')
"#;

fn cache_files(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("imap-cache"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .collect()
}

/// The decrypted views survive a restart (the same bytes, no second decryption), are
/// encrypted on disk, and a mailbox whose UIDVALIDITY changed shows its new messages and
/// loses the old records.
#[test]
fn imap_proxy_cache_persists_encrypted_and_follows_uidvalidity() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let settings = dv.proxy_settings("");
    let w = tempfile::tempdir().expect("tmp");
    let enc1 = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let enc2 = pki.openssl_encrypt(
        &pki.message(
            "carol@example.org",
            "alice@example.org",
            "second",
            "A different secret entirely.",
        ),
        &["alice@example.org"],
    );
    let env = |d: &Daemon, phase: &str| {
        vec![
            ("PROXY", imap_addr(d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "ENC1",
                write(w.path(), "enc1.eml", &enc1).display().to_string(),
            ),
            (
                "ENC2",
                write(w.path(), "enc2.eml", &enc2).display().to_string(),
            ),
            ("OUT", w.path().display().to_string()),
            ("PHASE", phase.to_string()),
        ]
    };
    let decryptions = |d: &Daemon| {
        d.audit()
            .iter()
            .filter(|r| {
                r["operation"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("imap-decrypt"))
            })
            .count()
    };
    let uidvalidity = |out: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix("uidvalidity "))
            .expect("uidvalidity")
            .to_string()
    };

    let mut d = Daemon::start(dir.path(), &settings);
    let out = python(w.path(), CACHE, &env(&d, "first"));
    assert!(out.contains("cache phase done"), "{out}");
    let old_uv = uidvalidity(&out);
    assert_eq!(decryptions(&d), 2);
    let files = cache_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let b = std::fs::read(f).expect("record");
        assert!(!contains(&b, "meet at noon"), "{f:?} holds cleartext");
        assert!(!contains(&b, "quarterly plans"), "{f:?} holds cleartext");
    }
    // No folder name says whose or which mailbox.
    for e in std::fs::read_dir(dir.path().join("imap-cache"))
        .expect("cache dir")
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains("alice") && !n.contains("INBOX"), "{n}");
    }
    d.terminate();

    // Restarted: the same views, from the cache (no new decryption).
    let mut d = Daemon::start(dir.path(), &settings);
    let out = python(w.path(), CACHE, &env(&d, "again"));
    assert!(out.contains("cache phase done"), "{out}");
    assert_eq!(decryptions(&d), 2, "decrypted again after a restart");
    for b in ["INBOX", "Box"] {
        let first = std::fs::read(w.path().join(format!("first-{b}.eml"))).expect("first");
        let again = std::fs::read(w.path().join(format!("again-{b}.eml"))).expect("again");
        assert_eq!(first, again, "{b}");
    }

    // Box made again: its new UID 1 is the other message, and the old records are gone.
    let out = python(w.path(), CACHE, &env(&d, "renewed"));
    let new_uv = uidvalidity(&out);
    assert_ne!(old_uv, new_uv);
    let renewed = std::fs::read(w.path().join("renewed-Box.eml")).expect("renewed");
    assert!(contains(&renewed, "A different secret entirely."));
    let names: Vec<String> = cache_files(dir.path())
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&format!("{new_uv}.1")), "{names:?}");
    assert_eq!(decryptions(&d), 3);
    d.terminate();
}

const SEARCH: &str = r#"
import imaplib, os, ssl

def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))

files = os.environ['MESSAGES'].split(':')
d = conn(os.environ['DOVECOT'], os.environ['DOVECOT_CA'])
d.login('alice@example.org', 'alicepw')
for f in files:
    assert d.append('INBOX', None, None, open(f, 'rb').read())[0] == 'OK'
d.create('Plain')
p = conn(os.environ['PROXY'], os.environ['PROXY_CA'])
p.login('alice@example.org', 'alicepw')
p.select('INBOX', readonly=True)
# The reference: what the proxy shows, stored as plain messages in the same order.
for i in range(1, len(files) + 1):
    typ, data = p.uid('FETCH', str(i), '(BODY.PEEK[])')
    assert d.append('Plain', None, None, data[0][1])[0] == 'OK'

# Straight at the server, the encrypted text is not found.
d.select('INBOX', readonly=True)
typ, direct = d.uid('SEARCH', None, 'BODY', 'pineapple')
assert direct[0].split() == [b'1'], direct
d.select('Plain', readonly=True)
sizes = {}
for i in range(1, len(files) + 1):
    typ, data = d.uid('FETCH', str(i), '(RFC822.SIZE)')
    sizes[i] = int(data[0].split(b'RFC822.SIZE ')[1].rstrip(b')'))
mid = sorted(sizes.values())[len(sizes) // 2]

SEARCHES = [
    ['BODY', 'pineapple'], ['TEXT', 'PINEAPPLE'], ['NOT', 'BODY', 'pineapple'],
    ['OR', 'BODY', 'pineapple', 'SUBJECT', 'quarterly'], ['BODY', '"meet at noon"'],
    ['TEXT', 'X-Sealgate-Decrypted'], ['HEADER', 'Content-Type', 'pkcs7'],
    ['HEADER', 'Content-Type', 'multipart'], ['FROM', 'carol'], ['SUBJECT', 'fruit'],
    ['LARGER', str(mid)], ['SMALLER', str(mid)], ['NOT', 'LARGER', str(mid)],
    ['UNSEEN', 'BODY', 'secret'], ['UID', '2:3', 'TEXT', 'pineapple'], ['ALL'],
    ['BODY', '"Forwarded secret body"'], ['TEXT', '"the forwarded one"'],
    ['OR', 'NOT', 'BODY', 'noon', 'LARGER', '1'],
]
n = 0
for s in SEARCHES:
    for uid in (True, False):
        if uid:
            typ, got = p.uid('SEARCH', None, *s)
            typ2, want = d.uid('SEARCH', None, *s)
        else:
            typ, got = p.search(None, *s)
            typ2, want = d.search(None, *s)
        assert typ == 'OK' and typ2 == 'OK', (s, got, want)
        assert sorted(got[0].split()) == sorted(want[0].split()), '%s uid=%s\nproxy:   %r\ndovecot: %r' % (s, uid, got, want)
        n += 1
# New mail arrives while the session runs: searched too.
assert d.append('INBOX', None, None, open(files[1], 'rb').read())[0] == 'OK'
p.noop()
typ, got = p.uid('SEARCH', None, 'BODY', 'pineapple')
assert got[0].split() == [b'1', b'2', b'5'], got
# A content SEARCH pipelined right behind SELECT (one write) waits for the SELECT's answer
# and is answered over the views too, in order.
p.send(b'x1 SELECT INBOX\r\nx2 UID SEARCH BODY pineapple\r\n')
lines = []
while True:
    line = p.readline()
    assert line, lines
    lines.append(line)
    if line.startswith(b'x2 '):
        break
tagged = [l for l in lines if l.startswith(b'x')]
assert [l.split()[:2] for l in tagged] == [[b'x1', b'OK'], [b'x2', b'OK']], lines
found = [l for l in lines if l.startswith(b'* SEARCH')]
assert len(found) == 1 and found[0].split()[2:] == [b'1', b'2', b'5'], lines
n += 1
print('searched %d' % n)
"#;

/// SEARCH over the decrypted views: a plain message, two encrypted to alice, one encrypted
/// to bob only (alice has no key: searched as stored); every answer (UID and MSN forms)
/// equals Dovecot's for the same views stored as plain messages.
#[test]
fn imap_proxy_searches_the_decrypted_views_like_dovecot_searches_them_stored() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let w = tempfile::tempdir().expect("tmp");
    let msgs = [
        pki.message(
            "carol@example.org",
            "alice@example.org",
            "fruit",
            "A pineapple in cleartext.",
        ),
        pki.openssl_encrypt(
            &pki.message(
                "carol@example.org",
                "alice@example.org",
                "secret fruit",
                "The PINEAPPLE is encrypted, a secret.",
            ),
            &["alice@example.org"],
        ),
        pki.openssl_encrypt(&rich_message(), &["alice@example.org"]),
        pki.openssl_encrypt(
            &pki.message(
                "carol@example.org",
                "bob@example.org",
                "for bob",
                "Bob's pineapple, not for alice.",
            ),
            &["bob@example.org"],
        ),
    ];
    let files: Vec<String> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            write(w.path(), &format!("m{i}.eml"), m)
                .display()
                .to_string()
        })
        .collect();
    let out = python(
        w.path(),
        SEARCH,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            ("MESSAGES", files.join(":")),
        ],
    );
    assert!(out.contains("searched 39"), "{out}");
}

const APPEND: &str = r#"
import imaplib, os, ssl

def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))

clear = open(os.environ['CLEAR'], 'rb').read()
enc_bob = open(os.environ['ENC_BOB'], 'rb').read()
out = os.environ['OUT']
d = conn(os.environ['DOVECOT'], os.environ['DOVECOT_CA'])
d.login('alice@example.org', 'alicepw')
d.create('Sent')
d.create('Drafts')
p = conn(os.environ['PROXY'], os.environ['PROXY_CA'])
p.login('alice@example.org', 'alicepw')
# A client saves its sent copy and a draft: the server gets S/MIME.
typ, data = p.append('Sent', '(\\Seen)', None, clear)
assert typ == 'OK', data
assert b'APPENDUID' in data[0], data
assert p.append('Drafts', None, None, clear)[0] == 'OK'
# INBOX is not Sent: stored as it is.
assert p.append('INBOX', None, None, clear)[0] == 'OK'
# Already encrypted (to bob): stored as it is, never wrapped again.
assert p.append('Sent', None, None, enc_bob)[0] == 'OK'

for box in ['Sent', 'Drafts']:
    d.select(box, readonly=True)
    typ, data = d.uid('FETCH', '1', '(FLAGS BODY.PEEK[])')
    stored = data[0][1]
    assert b'application/pkcs7-mime' in stored and b'authEnveloped-data' in stored, stored[:400]
    assert b'The plans for the draft' not in stored
    # Message-ID and Subject stay outside (clients look their copy up by Message-ID).
    assert b'Message-ID: <draft-1@example.org>' in stored, stored[:400]
    typ, found = d.uid('SEARCH', None, 'HEADER', 'Message-ID', '<draft-1@example.org>')
    assert found[0].split() == [b'1'], found
    open('%s/stored-%s.eml' % (out, box), 'wb').write(stored)
d.select('Sent', readonly=True)
typ, data = d.uid('FETCH', '1', '(FLAGS)')
assert b'\\Seen' in data[0], data
typ, data = d.uid('FETCH', '2', '(BODY.PEEK[])')
assert data[0][1] == enc_bob.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n'), 'an encrypted message was changed'
d.select('INBOX', readonly=True)
typ, data = d.uid('FETCH', '1', '(BODY.PEEK[])')
assert b'The plans for the draft' in data[0][1]

# Through the proxy the user reads the copy in cleartext.
p.select('Sent', readonly=True)
typ, data = p.uid('FETCH', '1', '(RFC822.SIZE BODY.PEEK[])')
view = data[0][1]
assert b'X-Sealgate-Decrypted: yes' in view, view[:300]
assert b'The plans for the draft' in view
assert (b'RFC822.SIZE %d ' % len(view)) in data[0][0]
p.logout(); d.logout()
print('append checks passed')
"#;

/// APPEND to Sent and Drafts: the server's copy is S/MIME (AES-256-GCM) that `openssl cms`
/// decrypts with alice's key, Message-ID kept outside; INBOX and an already encrypted
/// message are stored as they are; the proxy shows the copy decrypted.
#[test]
fn imap_proxy_encrypts_what_clients_append_to_sent_and_drafts() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let w = tempfile::tempdir().expect("tmp");
    let clear = b"From: Alice <alice@example.org>\r\nTo: carol@example.org\r\n\
Subject: draft plans\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\
Message-ID: <draft-1@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nThe plans for the draft.\r\n"
        .to_vec();
    let enc_bob = pki.openssl_encrypt(
        &pki.message("carol@example.org", "bob@example.org", "b", "for bob"),
        &["bob@example.org"],
    );
    let out = python(
        w.path(),
        APPEND,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "CLEAR",
                write(w.path(), "clear.eml", &clear).display().to_string(),
            ),
            (
                "ENC_BOB",
                write(w.path(), "bob.eml", &enc_bob).display().to_string(),
            ),
            ("OUT", w.path().display().to_string()),
        ],
    );
    assert!(out.contains("append checks passed"), "{out}");
    for b in ["Sent", "Drafts"] {
        let stored = std::fs::read(w.path().join(format!("stored-{b}.eml"))).expect("stored");
        let inner = pki.openssl_decrypt(&stored, "alice@example.org");
        assert!(
            contains(&inner, "The plans for the draft."),
            "{}",
            String::from_utf8_lossy(&inner)
        );
    }
    let audit = d.audit();
    assert_eq!(
        audit
            .iter()
            .filter(|r| r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("imap-append-encrypt"))
                && r["outcome"] == "encrypted")
            .count(),
        2,
        "{audit:?}"
    );
}

const STARTTLS: &str = r#"
import imaplib, os, socket, ssl

port, ca = int(os.environ['STARTTLS_PORT']), os.environ['PROXY_CA']
ctx = ssl.create_default_context(cafile=ca)
d = imaplib.IMAP4_SSL('127.0.0.1', int(os.environ['DOVECOT']), ssl_context=ssl.create_default_context(cafile=os.environ['DOVECOT_CA']))
d.login('alice@example.org', 'alicepw')
assert d.append('INBOX', None, None, open(os.environ['ENCRYPTED'], 'rb').read())[0] == 'OK'

# Before TLS: STARTTLS and LOGINDISABLED offered, a login refused.
p = imaplib.IMAP4('127.0.0.1', port)
assert b'STARTTLS' in p.welcome and b'LOGINDISABLED' in p.welcome, p.welcome
try:
    p.login('alice@example.org', 'alicepw')
    raise SystemExit('a login before TLS was accepted')
except imaplib.IMAP4.error as e:
    assert 'PRIVACYREQUIRED' in str(e), e
try:
    p.authenticate('PLAIN', lambda _: b'\0alice@example.org\0alicepw')
    raise SystemExit('AUTHENTICATE before TLS was accepted')
except imaplib.IMAP4.error as e:
    pass
assert p.noop()[0] == 'OK'
# After STARTTLS: the server's (filtered) capabilities, a login, the decrypted message.
p.starttls(ssl_context=ctx)
assert 'STARTTLS' not in p.capabilities and 'LOGINDISABLED' not in p.capabilities, p.capabilities
assert 'IMAP4REV1' in p.capabilities, p.capabilities
assert p.login('alice@example.org', 'alicepw')[0] == 'OK'
p.select('INBOX', readonly=True)
typ, data = p.uid('FETCH', '1', '(BODY.PEEK[])')
assert b'The plans are: meet at noon.' in data[0][1]
p.logout()

# Injection: commands pipelined after STARTTLS in plain text never run inside TLS.
s = socket.create_connection(('127.0.0.1', port))
s.settimeout(10)
got = b''
while b'\r\n' not in got:
    got += s.recv(1000)
s.sendall(b'A1 STARTTLS\r\nA2 LOGIN alice@example.org alicepw\r\nA3 SELECT INBOX\r\n')
got = b''
while b'A1 OK' not in got:
    got += s.recv(1000)
assert b'A2' not in got and b'A3' not in got, got
try:
    t = ctx.wrap_socket(s, server_hostname='127.0.0.1')
except (ssl.SSLError, OSError) as e:
    print('handshake refused after injected bytes:', e)
else:
    t.sendall(b'A4 CAPABILITY\r\nA5 SELECT INBOX\r\n')
    got = b''
    while b'A5 ' not in got:
        chunk = t.recv(4096)
        if not chunk:
            break
        got += chunk
    assert b'A2 ' not in got and b'A3 ' not in got, got
    assert b'A5 OK' not in got, got
    t.close()
# A literal before TLS ends the connection.
s = socket.create_connection(('127.0.0.1', port))
s.settimeout(10)
s.recv(1000)
s.sendall(b'A1 LOGIN {5}\r\n')
got = s.recv(1000)
assert b'BYE' in got and b'+' not in got[:1], got
print('starttls checks passed')
"#;

/// The STARTTLS listener: LOGINDISABLED before TLS, logins refused, the session after the
/// handshake is the proxy's usual one; commands pipelined after STARTTLS are discarded.
#[test]
fn imap_proxy_starttls_listener_refuses_logins_before_tls_and_drops_injected_commands() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[imap]\nlisten = \"127.0.0.1:0\"\nlisten_starttls = \"127.0.0.1:0\"\nupstream = \"imaps://127.0.0.1:{}\"\nupstream_ca = \"{}\"\n",
            dv.imaps,
            dv.ca().display()
        ),
    );
    let starttls = d
        .console
        .iter()
        .find_map(|l| l.strip_prefix("sealgated: listening imap-starttls "))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no imap-starttls listener: {:?}", d.console));
    let w = tempfile::tempdir().expect("tmp");
    let enc = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let out = python(
        w.path(),
        STARTTLS,
        &[
            ("STARTTLS_PORT", starttls.port().to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "ENCRYPTED",
                write(w.path(), "enc.eml", &enc).display().to_string(),
            ),
        ],
    );
    assert!(out.contains("starttls checks passed"), "{out}");
}

const LOGINS: &str = r#"
import imaplib, os, ssl, time

def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))

P, PCA = os.environ['PROXY'], os.environ['PROXY_CA']
D, DCA = os.environ['DOVECOT'], os.environ['DOVECOT_CA']
enc = open(os.environ['ENCRYPTED'], 'rb').read()
for user in ['jdoe', 'carol']:
    d = conn(D, DCA)
    d.login(user, 'pw-' + user)
    assert d.append('INBOX', None, None, enc)[0] == 'OK'
    d.logout()

# A mapped login name decrypts with the mapped user's keys; an unmapped one that is not an
# address decrypts nothing.
for user, decrypted in [('jdoe', True), ('carol', False)]:
    p = conn(P, PCA)
    p.login(user, 'pw-' + user)
    p.select('INBOX', readonly=True)
    typ, data = p.uid('FETCH', '1', '(BODY.PEEK[])')
    assert (b'The plans are: meet at noon.' in data[0][1]) == decrypted, (user, data[0][1][:200])
    p.logout()

# Two sessions per user at most: the third is refused, one closed makes room.
a = conn(P, PCA); a.login('alice@example.org', 'alicepw')
b = conn(P, PCA); b.login('ALICE@example.org', 'alicepw')
c = conn(P, PCA)
try:
    c.login('alice@example.org', 'alicepw')
    raise SystemExit('a third session was accepted')
except (imaplib.IMAP4.error, imaplib.IMAP4.abort) as e:
    assert 'Too many sessions' in str(e), e
a.logout()
c = conn(P, PCA)
assert c.login('alice@example.org', 'alicepw')[0] == 'OK'
b.logout(); c.logout()

# A password guesser: ten refused logins, then even the right password is refused by the
# box (the server is not asked).
p = conn(P, PCA)
started = time.time()
for i in range(10):
    try:
        p.login('mallory@example.net', 'guess%d' % i)
        raise SystemExit('a wrong password was accepted')
    except imaplib.IMAP4.error as e:
        assert 'Too many failed' not in str(e), (i, e)
try:
    p.login('mallory@example.net', 'mallorypw')
    raise SystemExit('a login was accepted while throttled')
except imaplib.IMAP4.error as e:
    assert 'Too many failed logins' in str(e), e
# AUTHENTICATE too.
try:
    p.authenticate('PLAIN', lambda _: b'\0mallory@example.net\0mallorypw')
    raise SystemExit('AUTHENTICATE was accepted while throttled')
except imaplib.IMAP4.error as e:
    assert 'Too many failed logins' in str(e), e
p.logout()
print('login checks passed in %.1f s' % (time.time() - started))
"#;

/// Login names mapped to vault users, sessions per user, and failed-login throttling.
#[test]
fn imap_proxy_maps_logins_limits_sessions_per_user_and_throttles_guessers() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[
        ("alice@example.org", "alicepw"),
        ("mallory@example.net", "mallorypw"),
        ("jdoe", "pw-jdoe"),
        ("carol", "pw-carol"),
    ]);
    let d = Daemon::start(
        dir.path(),
        &dv.proxy_settings(
            "max_sessions_per_user = 2\n[imap.logins]\n\"JDoe\" = \"alice@example.org\"\n",
        ),
    );
    let w = tempfile::tempdir().expect("tmp");
    let enc = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let out = python(
        w.path(),
        LOGINS,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "ENCRYPTED",
                write(w.path(), "enc.eml", &enc).display().to_string(),
            ),
        ],
    );
    assert!(out.contains("login checks passed"), "{out}");
    // The mapped login decrypted as alice; the audit names the login.
    assert!(
        d.audit()
            .iter()
            .any(|r| r["client"] == "imap:jdoe" && r["outcome"] == "decrypted"),
        "{:?}",
        d.audit()
    );
}

const FILL: &str = r#"
import imaplib, os, ssl
d = imaplib.IMAP4_SSL('127.0.0.1', int(os.environ['DOVECOT']), ssl_context=ssl.create_default_context(cafile=os.environ['DOVECOT_CA']))
d.login('alice@example.org', 'alicepw')
enc = open(os.environ['ENCRYPTED'], 'rb').read()
for i in range(1, int(os.environ['COUNT']) + 1):
    if i % 10 == 0:
        msg = enc
    else:
        msg = ('From: carol@example.org\r\nTo: alice@example.org\r\nSubject: plain %d\r\n'
               'Message-ID: <plain-%d@example.org>\r\n\r\nPlain message number %d.\r\n' % (i, i, i)).encode()
    assert d.append('INBOX', None, None, msg)[0] == 'OK'
d.logout()
print('filled')
"#;

fn proxy_with_mailbox(count: usize) -> (Pki, tempfile::TempDir, Dovecot, Daemon) {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let enc = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let w = tempfile::tempdir().expect("tmp");
    let out = python(
        w.path(),
        FILL,
        &[
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "ENCRYPTED",
                write(w.path(), "enc.eml", &enc).display().to_string(),
            ),
            ("COUNT", count.to_string()),
        ],
    );
    assert!(out.contains("filled"), "{out}");
    (pki, dir, dv, d)
}

/// mbsync (isync) syncs a 1,000-message mailbox (every tenth encrypted) through the proxy:
/// every message arrives, the encrypted ones in cleartext; a second run downloads nothing.
#[test]
fn imap_proxy_mbsync_syncs_a_thousand_messages_in_cleartext() {
    require_tool("mbsync", "isync");
    let (_pki, _dir, _dv, d) = proxy_with_mailbox(1000);
    let w = tempfile::tempdir().expect("tmp");
    let maildir = w.path().join("mail");
    std::fs::create_dir_all(&maildir).expect("maildir");
    let conf = format!(
        "IMAPAccount proxy\nHost 127.0.0.1\nPort {}\nUser alice@example.org\nPass alicepw\n\
         SSLType IMAPS\nCertificateFile {}\nTimeout 20\n\n\
         IMAPStore remote\nAccount proxy\n\n\
         MaildirStore local\nPath {m}/\nInbox {m}/INBOX\n\n\
         Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull\n\
         SyncState *\n",
        imap_addr(&d),
        d.ca_file().display(),
        m = maildir.display()
    );
    let rc = write(w.path(), "mbsyncrc", conf.as_bytes());
    let started = Instant::now();
    let out = Command::new("mbsync")
        .arg("-V")
        .arg("-c")
        .arg(&rc)
        .arg("-a")
        .output()
        .expect("mbsync");
    if !out.status.success() {
        let all = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = all
            .lines()
            .filter(|l| !l.starts_with("* "))
            .rev()
            .take(60)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let log: String = std::fs::read_dir(d.data_dir.join("log"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        let log_tail: Vec<&str> = log.lines().filter(|l| l.contains("imap")).collect();
        panic!(
            "mbsync failed:\n{}\nlog:\n{}",
            tail.join("\n"),
            log_tail.join("\n")
        );
    }
    let first = started.elapsed();
    let files: Vec<PathBuf> = ["cur", "new"]
        .iter()
        .flat_map(|s| {
            std::fs::read_dir(maildir.join("INBOX").join(s))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        files.len(),
        1000,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut decrypted = 0;
    for f in &files {
        let b = std::fs::read(f).expect("message");
        assert!(!contains(&b, "pkcs7"), "{f:?} is still encrypted");
        if contains(&b, "X-Sealgate-Decrypted: yes") {
            assert!(contains(&b, "The plans are: meet at noon."));
            decrypted += 1;
        }
    }
    assert_eq!(decrypted, 100);
    // Again: nothing new (sizes and UIDs stable), and quickly.
    let out = run(Command::new("mbsync")
        .arg("-V")
        .arg("-c")
        .arg(&rc)
        .arg("-a"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let count = ["cur", "new"]
        .iter()
        .flat_map(|s| {
            std::fs::read_dir(maildir.join("INBOX").join(s))
                .into_iter()
                .flatten()
        })
        .count();
    assert_eq!(count, 1000, "{text}");
    eprintln!("mbsync: first sync of 1,000 messages {first:?}");
}

/// mutt in tmux opens an encrypted message through the proxy and shows its cleartext.
#[test]
fn imap_proxy_mutt_in_tmux_reads_an_encrypted_message() {
    require_tool("mutt", "mutt");
    require_tool("tmux", "tmux");
    let (_pki, _dir, _dv, d) = proxy_with_mailbox(10);
    let w = tempfile::tempdir().expect("tmp");
    let muttrc = format!(
        "set folder=\"imaps://alice%40example.org@127.0.0.1:{}/\"\nset spoolfile=\"+INBOX\"\n\
         set imap_pass=\"alicepw\"\nset certificate_file=\"{}\"\nset ssl_verify_host=yes\n\
         set header_cache=\"\"\nset message_cachedir=\"\"\nset sort=mailbox-order\n\
         set mail_check=0\nset timeout=1\nset pager_index_lines=0\nset confirmappend=no\n\
         set move=no\nset mbox_type=Maildir\nset record=\"\"\nunset wait_key\n",
        imap_addr(&d),
        d.ca_file().display()
    );
    let rc = write(w.path(), "muttrc", muttrc.as_bytes());
    let session = format!("sealgate-imap-{}", std::process::id());
    run(Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "50"])
        .arg(format!(
            "TERM=xterm HOME={} mutt -n -F {}",
            w.path().display(),
            rc.display()
        )));
    let capture = || {
        String::from_utf8_lossy(
            &Command::new("tmux")
                .args(["capture-pane", "-p", "-t", &session])
                .output()
                .expect("tmux")
                .stdout,
        )
        .to_string()
    };
    let wait_for = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = capture();
            if screen.contains(needle) {
                return screen;
            }
            if Instant::now() > deadline {
                let _ = Command::new("tmux")
                    .args(["kill-session", "-t", &session])
                    .status();
                panic!("mutt never showed {needle:?}:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The index lists the encrypted message (number 10) by its subject.
    wait_for("quarterly plans");
    // Jump to message 10 and open it.
    for keys in [&["1", "0", "Enter"][..], &["Enter"][..]] {
        run(Command::new("tmux")
            .args(["send-keys", "-t", &session])
            .args(keys));
        std::thread::sleep(Duration::from_millis(500));
    }
    let screen = wait_for("The plans are: meet at noon.");
    assert!(!screen.contains("pkcs7"), "{screen}");
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
}

const COPY: &str = r#"
import imaplib, os, ssl
def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))
d = conn(os.environ['DOVECOT'], os.environ['DOVECOT_CA'])
d.login('alice@example.org', 'alicepw')
assert d.append('INBOX', None, None, open(os.environ['ENCRYPTED'], 'rb').read())[0] == 'OK'
d.create('Archive')
p = conn(os.environ['PROXY'], os.environ['PROXY_CA'])
p.login('alice@example.org', 'alicepw')
p.select('INBOX')
typ, data = p.uid('FETCH', '1', '(BODY.PEEK[])')
view = data[0][1]
assert b'X-Sealgate-Decrypted: yes' in view
assert p.uid('COPY', '1', 'Archive')[0] == 'OK'
assert p.uid('MOVE', '1', 'Archive')[0] == 'OK'
p.select('Archive', readonly=True)
for uid in ['1', '2']:
    typ, data = p.uid('FETCH', uid, '(RFC822.SIZE BODY.PEEK[])')
    assert data[0][1] == view, (uid, data[0][1][:200])
p.logout(); d.logout()
print('copy checks passed')
"#;

/// COPY and MOVE carry a message's view to its copy (COPYUID): the copies look the same
/// and nothing is decrypted again.
#[test]
fn imap_proxy_copy_and_move_carry_the_view_without_decrypting_again() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(dir.path(), &dv.proxy_settings(""));
    let w = tempfile::tempdir().expect("tmp");
    let enc = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let out = python(
        w.path(),
        COPY,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "ENCRYPTED",
                write(w.path(), "enc.eml", &enc).display().to_string(),
            ),
        ],
    );
    assert!(out.contains("copy checks passed"), "{out}");
    let decryptions = d
        .audit()
        .iter()
        .filter(|r| {
            r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("imap-decrypt"))
        })
        .count();
    assert_eq!(decryptions, 1, "{:?}", d.audit());
}

/// An RFC 7662 introspection endpoint: `argv[1]` maps a path to its tokens' answers; every
/// question is logged to `argv[2]` as `PATH TOKEN`.
const INTROSPECT: &str = r#"
import http.server, json, sys, urllib.parse
tables = json.loads(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        tok = form.get('token', [''])[0]
        body = json.dumps(tables.get(self.path, {}).get(tok, {'active': False})).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with open(sys.argv[2], 'a') as f:
            f.write('%s %s\n' % (self.path, tok))
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

const OAUTH: &str = r#"
import base64, imaplib, os, socket, ssl
P, PCA = int(os.environ['PROXY']), os.environ['PROXY_CA']
D, DCA = int(os.environ['DOVECOT']), os.environ['DOVECOT_CA']
enc = open(os.environ['ENCRYPTED'], 'rb').read()

d = imaplib.IMAP4_SSL('127.0.0.1', D, ssl_context=ssl.create_default_context(cafile=DCA))
d.login('alice@example.org', 'alicepw')
assert d.append('INBOX', None, None, enc)[0] == 'OK'
d.logout()

def xoauth2(user, tok):
    return ('user=%s\x01auth=Bearer %s\x01\x01' % (user, tok)).encode()

def shown(p):
    typ, _ = p.select('INBOX', readonly=True)
    assert typ == 'OK'
    typ, data = p.uid('FETCH', '1', '(RFC822.SIZE BODY.PEEK[])')
    assert typ == 'OK', data
    body = data[0][1]
    assert (b'RFC822.SIZE %d' % len(body)) in data[0][0], data[0][0]
    return body

def via_imaplib(user, tok):
    p = imaplib.IMAP4_SSL('127.0.0.1', P, ssl_context=ssl.create_default_context(cafile=PCA))
    sent = []
    def answer(challenge):
        # The first answer is the token; after a refusal (an error continuation) an empty one.
        sent.append(1)
        return xoauth2(user, tok) if len(sent) == 1 else b''
    try:
        p.authenticate('XOAUTH2', answer)
    except imaplib.IMAP4.error as e:
        p.logout()
        return 'refused: %s' % e
    body = shown(p)
    p.logout()
    return body

# XOAUTH2 (imaplib sends the token after the server's continuation): the token is alice's.
body = via_imaplib('alice@example.org', 'tok-alice')
assert b'X-Sealgate-Decrypted: yes' in body and b'The plans are: meet at noon.' in body, body[:300]

# OAUTHBEARER with the token in the command (SASL-IR), from a raw TLS socket.
ctx = ssl.create_default_context(cafile=PCA)
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', P)), server_hostname='127.0.0.1')
f = s.makefile('rb')
f.readline()
ir = base64.b64encode(b'n,a=alice@example.org,\x01host=127.0.0.1\x01port=993\x01auth=Bearer tok-alice\x01\x01')
s.sendall(b'o1 AUTHENTICATE OAUTHBEARER ' + ir + b'\r\n')
line = f.readline()
while line.startswith(b'*'):
    line = f.readline()
assert line.startswith(b'o1 OK'), line
s.sendall(b'o2 EXAMINE INBOX\r\no3 UID FETCH 1 (BODY.PEEK[TEXT])\r\no4 LOGOUT\r\n')
out = b''
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
assert b'The plans are: meet at noon.' in out and b'o3 OK' in out, out[-400:]

# A token the server takes for alice's mailbox but the box's endpoint says is mallory's:
# the server lets the login in, the box shows alice's mail only as stored.
body = via_imaplib('alice@example.org', 'tok-swap')
assert b'X-Sealgate-Decrypted' not in body and b'pkcs7-mime' in body, body[:300]

# A token the box's endpoint does not confirm (not active): shown as stored.
body = via_imaplib('alice@example.org', 'tok-unconfirmed')
assert b'X-Sealgate-Decrypted' not in body and b'pkcs7-mime' in body, body[:300]

# mallory's own token naming alice: Dovecot itself refuses it.
r = via_imaplib('alice@example.org', 'tok-mallory')
assert isinstance(r, str) and r.startswith('refused'), r
print('oauth checked')
"#;

/// OAuth sessions (XOAUTH2 with the token after the continuation, OAUTHBEARER with SASL-IR)
/// decrypt only for the account the box's own introspection of the token names, and only
/// when the request names that account. Dovecot checks the tokens with its `oauth2` passdb;
/// it and the box ask different paths of one endpoint here, so the server can be made to
/// accept a token for a mailbox the box attributes to someone else (as a server that ignores
/// the name would) and what the box decides is seen to be its own.
#[test]
fn imap_proxy_decrypts_oauth_sessions_only_for_the_token_owner_the_box_confirms() {
    use std::io::BufRead;
    require_tool("python3", "python3");
    let w = tempfile::tempdir().expect("tmp");
    let alice = serde_json::json!({"active": true, "username": "alice@example.org"});
    let mallory = serde_json::json!({"active": true, "username": "mallory@example.net"});
    let tables = serde_json::json!({
        "/dovecot": {
            "tok-alice": alice, "tok-mallory": mallory, "tok-swap": alice,
            "tok-unconfirmed": alice,
        },
        "/box": {
            "tok-alice": alice, "tok-mallory": mallory, "tok-swap": mallory,
            "tok-unconfirmed": {"active": false},
        },
    });
    let asked = w.path().join("asked.log");
    let script = write(w.path(), "introspect.py", INTROSPECT.as_bytes());
    let mut idp = Command::new("python3")
        .arg(&script)
        .arg(tables.to_string())
        .arg(&asked)
        .stdout(Stdio::piped())
        .spawn()
        .expect("introspection endpoint");
    let mut line = String::new();
    std::io::BufReader::new(idp.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port: u16 = line.trim().parse().expect("port");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start_with(
        &[
            ("alice@example.org", "alicepw"),
            ("mallory@example.net", "mallorypw"),
        ],
        Some(&format!("http://127.0.0.1:{port}/dovecot")),
    );
    let d = Daemon::start(
        dir.path(),
        &dv.proxy_settings(&format!(
            "oauth_introspection = \"http://127.0.0.1:{port}/box\"\n"
        )),
    );
    let enc = pki.openssl_encrypt(&rich_message(), &["alice@example.org"]);
    let env = vec![
        ("PROXY", imap_addr(&d).to_string()),
        ("PROXY_CA", d.ca_file().display().to_string()),
        ("DOVECOT", dv.imaps.to_string()),
        ("DOVECOT_CA", dv.ca().display().to_string()),
        (
            "ENCRYPTED",
            write(w.path(), "enc.eml", &enc).display().to_string(),
        ),
    ];
    let file = write(w.path(), "oauth_client.py", OAUTH.as_bytes());
    let mut cmd = Command::new("python3");
    cmd.arg(&file);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3");
    let _ = idp.kill();
    let _ = idp.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains("oauth checked"),
        "{stdout}\n{}\ndovecot:\n{}",
        String::from_utf8_lossy(&out.stderr),
        dv.log()
    );
    // The box asked its own endpoint about every token the server accepted.
    let asked = std::fs::read_to_string(&asked).unwrap_or_default();
    for tok in ["tok-alice", "tok-swap", "tok-unconfirmed"] {
        assert!(asked.contains(&format!("/box {tok}\n")), "{asked}");
    }
    // Decrypted for alice only, and the token never in the audit log.
    let audit = d.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["client"] == "imap:alice@example.org" && r["outcome"] == "decrypted"),
        "{audit:?}"
    );
    assert!(
        !audit
            .iter()
            .any(|r| r.to_string().contains("tok-") || r["client"] == "imap:mallory@example.net"),
        "{audit:?}"
    );
}

const PREFETCH: &str = r#"
import imaplib, json, os, ssl, time
audit = os.path.join(os.environ['DATA'], 'audit', 'docking.jsonl')
def decrypted():
    try:
        lines = open(audit).read().splitlines()
    except FileNotFoundError:
        return []
    recs = [json.loads(l) for l in lines]
    return [r['operation'].split('uid=')[1] for r in recs
            if r['operation'].startswith('imap-decrypt') and r['outcome'] == 'decrypted']
p = imaplib.IMAP4_SSL('127.0.0.1', int(os.environ['PROXY']), ssl_context=ssl.create_default_context(cafile=os.environ['PROXY_CA']))
p.login('alice@example.org', 'alicepw')
assert p.select('INBOX')[0] == 'OK'
# Nothing fetched: the proxy decrypts the encrypted messages ahead, newest first.
deadline = time.time() + 60
while len(decrypted()) < 3 and time.time() < deadline:
    time.sleep(0.2)
assert decrypted() == ['30', '20', '10'], decrypted()
# The listing is answered from what the prefetch made: no decryption more.
typ, data = p.uid('FETCH', '1:*', '(UID RFC822.SIZE BODYSTRUCTURE)')
assert typ == 'OK' and len(data) == 30, data
assert decrypted() == ['30', '20', '10'], decrypted()
p.logout()
print('prefetched')
"#;

/// Selecting a mailbox starts a background prefetch of its encrypted messages (newest
/// first, on the read-only worker connection): they are decrypted before the client asks,
/// and its listing then costs no decryption.
#[test]
fn imap_proxy_prefetches_the_encrypted_messages_of_a_selected_mailbox() {
    let (_pki, _dir, _dv, d) = proxy_with_mailbox(30);
    let w = tempfile::tempdir().expect("tmp");
    let out = python(
        w.path(),
        PREFETCH,
        &[
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DATA", d.data_dir.display().to_string()),
        ],
    );
    assert!(out.contains("prefetched"), "{out}");
}

const JUNK: &str = r#"
import imaplib, os, ssl
def conn(port, ca):
    return imaplib.IMAP4_SSL('127.0.0.1', int(port), ssl_context=ssl.create_default_context(cafile=ca))
phase = os.environ['PHASE']
if phase == 'fill':
    d = conn(os.environ['DOVECOT'], os.environ['DOVECOT_CA'])
    d.login('alice@example.org', 'alicepw')
    for f in ['SPAM_TO_ALICE', 'HAM', 'SPAM_TO_BOB']:
        assert d.append('INBOX', None, None, open(os.environ[f], 'rb').read())[0] == 'OK'
    for box in ['Junk', 'Trash', 'Archive']:
        assert d.create(box)[0] == 'OK'
    d.logout()
    print('filled')
    raise SystemExit
p = conn(os.environ['PROXY'], os.environ['PROXY_CA'])
p.login('alice@example.org', 'alicepw')
if phase == '1':
    # Into Junk: spam encrypted to alice (counted, decrypted), spam encrypted to bob (skipped:
    # never trained on ciphertext).
    p.select('INBOX')
    assert p.uid('MOVE', '1', 'Junk')[0] == 'OK'
    assert p.uid('MOVE', '3', 'Junk')[0] == 'OK'
elif phase == '2':
    # Out of Junk: alice's message was not spam after all (ham, taken back from spam); bob's
    # into Trash and the plain one into Archive say nothing.
    p.select('Junk')
    assert p.uid('MOVE', '1', 'INBOX')[0] == 'OK'
    assert p.uid('MOVE', '2', 'Trash')[0] == 'OK'
    p.select('INBOX')
    assert p.uid('MOVE', '2', 'Archive')[0] == 'OK'
elif phase == '3':
    # Past the daily limit: nothing counts.
    p.select('INBOX')
    assert p.uid('COPY', '1:*', 'Junk')[0] == 'OK'
p.logout()
print('phase', phase, 'done')
"#;

/// Junk-folder feedback through the proxy: a message moved into Junk counts as spam in the
/// classifier's local layer (decrypted first: never the ciphertext), moved out again as ham
/// (taken back from spam), moves to Trash or elsewhere count nothing, a message the user's
/// keys do not open is skipped, and a user's daily limit bounds what one account can teach
/// the box; every batch is audited.
#[test]
fn imap_proxy_junk_moves_train_the_spam_classifier() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dv = Dovecot::start(&[("alice@example.org", "alicepw")]);
    let d = Daemon::start(
        dir.path(),
        &dv.proxy_settings("junk_feedback = true\njunk_feedback_daily = 3\n"),
    );
    let w = tempfile::tempdir().expect("tmp");
    // The corpus keeps each message with mbox's `From ` line first: not a header field.
    let message = |group: &str| {
        let m = std::fs::read(crate::scan_train::corpus_file(group)).expect("corpus message");
        let m = match m.strip_prefix(b"From ") {
            Some(rest) => {
                rest[rest.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)..].to_vec()
            }
            None => m,
        };
        sealgate_imap_crlf(&m)
    };
    let (spam, ham) = (message("spam-1"), message("easy-ham-2"));
    let env = |phase: &str| {
        vec![
            ("PHASE", phase.to_string()),
            ("PROXY", imap_addr(&d).to_string()),
            ("PROXY_CA", d.ca_file().display().to_string()),
            ("DOVECOT", dv.imaps.to_string()),
            ("DOVECOT_CA", dv.ca().display().to_string()),
            (
                "SPAM_TO_ALICE",
                write(
                    w.path(),
                    "a.eml",
                    &encrypt(&pki, &spam, &["alice@example.org"]),
                )
                .display()
                .to_string(),
            ),
            (
                "SPAM_TO_BOB",
                write(
                    w.path(),
                    "b.eml",
                    &encrypt(&pki, &spam, &["bob@example.org"]),
                )
                .display()
                .to_string(),
            ),
            ("HAM", write(w.path(), "h.eml", &ham).display().to_string()),
        ]
    };
    let feedback = |n: usize| -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: Vec<_> = d
                .audit()
                .into_iter()
                .filter(|r| {
                    r["operation"]
                        .as_str()
                        .is_some_and(|o| o.starts_with("imap-feedback"))
                })
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{n} feedback records: {got:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let counts = || {
        let Ok(b) = std::fs::read(dir.path().join("scan/spam-local.bin")) else {
            return (0, 0);
        };
        let c = sealgate_scan::classifier::Counts::parse(&b).expect("loads");
        (c.spam_messages(), c.ham_messages())
    };
    assert!(python(w.path(), JUNK, &env("fill")).contains("filled"));
    assert!(python(w.path(), JUNK, &env("1")).contains("phase 1 done"));
    let recs = feedback(2);
    assert_eq!(counts(), (1, 0), "{recs:?}");
    let outcomes: Vec<&str> = recs.iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert!(
        outcomes.iter().any(|o| o.starts_with("counted 1 of 1")),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("counted 0 of 0") && o.contains("skipped 1 no-matching-key")),
        "{outcomes:?}"
    );
    assert!(python(w.path(), JUNK, &env("2")).contains("phase 2 done"));
    let recs = feedback(3);
    assert_eq!(counts(), (0, 1), "{recs:?}");
    assert!(
        recs[2]["operation"]
            .as_str()
            .is_some_and(|o| o.starts_with("imap-feedback ham Junk -> INBOX")),
        "{recs:?}"
    );
    assert!(
        recs[2]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("counted 1 of 1 (changed class 1)")),
        "{recs:?}"
    );
    assert!(python(w.path(), JUNK, &env("3")).contains("phase 3 done"));
    let recs = feedback(4);
    assert!(
        recs[3]["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("limit: 0 of")),
        "{recs:?}"
    );
    assert_eq!(counts(), (0, 1));
    // No content in the audit: the corpus message's subject appears nowhere.
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    let subject = String::from_utf8_lossy(&spam)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .expect("subject");
    assert!(!log.contains(&subject), "{subject}");
}
