# The web UI in a real browser: Debian's Chromium, headless, driven by Playwright (no browser
# download: executable_path). Started by tests/docking/webui.rs against a running sealgated.
# Prints one JSON line of results for the Rust side (RESULT {...}).
import base64, json, os, re, sys, time
from playwright.sync_api import Browser, sync_playwright, expect

BASE = os.environ["BASE"]
SETUP = os.environ["SETUP"]
SPKI = os.environ["SPKI"]
SHOTS = os.environ["SHOTS"]
CHROMIUM = os.environ["CHROMIUM"]
P12 = os.environ.get("P12", "")
EC_CERT = os.path.join(os.path.dirname(P12), "corpus-ec.pem")
AXE = os.environ.get("AXE", "")
QUEUED = os.environ.get("QUEUED", "")
PW = "correct horse battery staple"
XSS = "<img src=x onerror=window.__xss=1>"
os.makedirs(SHOTS, exist_ok=True)
# A busy two-core CI machine builds while this runs: wait longer than the default 5 s.
# Waits are limits, not timings: beside the QEMU suite a step can take tens of seconds.
PATIENCE_MS = 90_000
expect.set_options(timeout=PATIENCE_MS)
_new_context = Browser.new_context
Browser.new_context = lambda self, **kw: _patient(_new_context(self, **kw))
def _patient(ctx):
    ctx.set_default_timeout(PATIENCE_MS)
    return ctx

console_errors = []   # every console error that is not an API answer the UI showed
api_answers = []      # 4xx answers of the admin API (the UI shows their problem documents)
csp_violations = []
result = {}


def on_console(msg):
    if msg.type not in ("error", "warning"):
        return
    url = (msg.location or {}).get("url", "")
    text = msg.text
    if msg.type == "error" and "/api/v1/admin/" in url and re.match(
            r"Failed to load resource: the server responded with a status of 4\d\d", text):
        api_answers.append(f"{url}: {text}")
        return
    if msg.type == "error" or "Content Security Policy" in text or "Trusted Type" in text:
        console_errors.append(f"{msg.type}: {text} ({url})")


CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def totp_code(secret_b32, step):
    # RFC 6238 with the box's parameters: SHA-1, 6 digits, 30 s.
    import hashlib, hmac, struct
    key = base64.b32decode(secret_b32.strip().upper() + "=" * (-len(secret_b32.strip()) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def shot(page, name):
    page.wait_for_load_state("networkidle")
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def check_page(page, name, heading):
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    shot(page, name)
    assert not console_errors, (name, console_errors)


def intermediate_flow(browser):
    # The box's CA as an intermediate under a corporate CA: key and CSR on the box, the CSR
    # signed with openssl (the corporate CA), the answer installed from the page.
    import subprocess, tempfile
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.add_init_script(CSP_WATCH)
    page = ctx.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
    page.goto(BASE + "/#/claim")
    page.get_by_label("Setup token").fill(SETUP)
    page.get_by_label("Administrator's username").fill("root")
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_label("Password again").fill(PW)
    page.get_by_role("button", name="Create the administrator").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    page.get_by_role("link", name="Users and keys").click()
    inter = page.get_by_role("form", name="Create an intermediate CA")
    inter.get_by_label("CA name").fill("Box Intermediate")
    inter.get_by_label("Mail domains").fill("example.org")
    inter.get_by_role("button", name="Create the key and CSR").click()
    expect(page.get_by_text(re.compile("waits for the certificate your organisation's CA signs"))).to_be_visible()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download the CSR").click()
    tmp = tempfile.mkdtemp()
    csr = os.path.join(tmp, "box.csr")
    dl.value.save_as(csr)
    ext = os.path.join(tmp, "ext")
    open(ext, "w").write("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
    signed = os.path.join(tmp, "box.crt")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", os.environ["CORP_CA"], "-CAkey",
                    os.environ["CORP_KEY"], "-set_serial", "4242", "-days", "30", "-extfile", ext,
                    "-out", signed], check=True, capture_output=True)
    install = page.get_by_role("form", name="Install the signed certificate")
    # Not a certificate of this key: refused, the CA stays pending.
    install.get_by_label("Or paste PEM").fill(open(os.environ["CORP_CA"]).read())
    install.get_by_role("button", name="Install").click()
    bad = install.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    result["intermediate_wrong_certificate"] = bad.first.inner_text()
    install.get_by_label("Or paste PEM").fill("")
    install.get_by_label("Certificate file (PEM or DER)").set_input_files(signed)
    install.get_by_label("The corporate chain above it (PEM)").fill(open(os.environ["CORP_CA"]).read())
    install.get_by_role("button", name="Install").click()
    expect(page.get_by_text(re.compile("State: active"))).to_be_visible()
    expect(page.get_by_text("intermediate (under a corporate CA)")).to_be_visible()
    iss = page.get_by_role("form", name="Issue a certificate from the box's CA")
    iss.get_by_label("User's address").fill("erin@example.org")
    iss.get_by_role("button", name="Issue").click()
    expect(iss.get_by_text(re.compile("Issued: erin@example.org"))).to_be_visible()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Issue a fresh CRL").click()
    assert "BEGIN X509 CRL" in open(dl.value.path()).read()
    shot(page, "ca-intermediate")
    # Certificates a gateway posted wait: approve one, reject the other (after confirming).
    page.get_by_role("link", name="Certificates").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Certificates")
    waiting = page.get_by_role("region", name="Certificates waiting for a decision")
    expect(waiting.locator("tbody tr")).to_have_count(2)
    shot(page, "certificates-pending")
    page.get_by_role("button", name="Approve the certificate of dave@example.org").click()
    expect(page.get_by_text("Approved: encrypt uses it now.")).to_be_visible()
    page.get_by_role("button", name="Reject the certificate of frank@example.org").click()
    page.get_by_role("dialog").get_by_role("button", name="Reject").click()
    expect(page.get_by_text("Rejected.")).to_be_visible()
    expect(page.get_by_text("Nothing waits.")).to_be_visible()
    stored = page.get_by_role("region", name="Stored certificates")
    expect(stored.locator("tbody tr").filter(has_text="dave@example.org")).to_have_count(1)
    expect(stored.locator("tbody tr").filter(has_text="frank@example.org")).to_have_count(0)
    csp = page.evaluate("window.__csp")
    assert not csp and not console_errors, (csp, console_errors)


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=CHROMIUM,
        # Trust exactly the box's key (its certificate is self-signed), nothing else.
        args=[f"--ignore-certificate-errors-spki-list={SPKI}"],
    )
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    # Runs in every page before its own scripts (through the DevTools protocol, not as an
    # inline script, which the policy would refuse): records CSP violations.
    ctx.add_init_script(CSP_WATCH)
    if os.environ.get("FLOW") == "intermediate":
        intermediate_flow(browser)
        browser.close()
        print("RESULT " + json.dumps(result), flush=True)
        sys.exit(0)
    page = ctx.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))

    # --- The first page: what it weighs, the headers it carries. ---
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    transferred = {"bytes": 0, "requests": 0}

    def finished(ev):
        transferred["bytes"] += int(ev.get("encodedDataLength", 0))
        transferred["requests"] += 1
    cdp.on("Network.loadingFinished", finished)
    resp = page.goto(BASE + "/")
    h = resp.headers
    assert resp.status == 200, resp.status
    assert h["content-type"] == "text/html; charset=utf-8", h
    assert "script-src 'self'" in h["content-security-policy"], h
    assert "'unsafe-inline'" not in h["content-security-policy"], h
    assert "frame-ancestors 'none'" in h["content-security-policy"], h
    assert h["x-frame-options"] == "DENY", h
    assert h["strict-transport-security"].startswith("max-age="), h
    assert h["x-content-type-options"] == "nosniff", h
    expect(page).to_have_url(re.compile(r"#/login$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    page.wait_for_load_state("networkidle")
    cdp.detach()
    result["first_page_bytes"] = transferred["bytes"]
    result["first_page_requests"] = transferred["requests"]
    print(f"first page transferred: {transferred['bytes']} bytes in {transferred['requests']} requests", flush=True)
    assert transferred["bytes"] < 300_000, transferred
    check_page(page, "login", "Log in")

    # --- Claim: a wrong token and differing passwords are shown, then it works. ---
    page.get_by_role("link", name=re.compile("Claim it")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Claim this box")
    page.get_by_label("Setup token").fill("sgt_wrong")
    page.get_by_label("Administrator's username").fill("root")
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_label("Password again").fill(PW)
    shot(page, "claim")
    page.get_by_role("button", name="Create the administrator").click()
    err = page.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(err.first).to_be_visible()
    result["claim_wrong_token"] = err.first.inner_text()
    page.get_by_label("Setup token").fill(SETUP)
    page.get_by_label("Password again").fill(PW + "x")
    page.get_by_role("button", name="Create the administrator").click()
    expect(page.get_by_text("The two passwords differ")).to_be_visible()
    page.get_by_label("Password again").fill(PW)
    page.get_by_role("button", name="Create the administrator").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.get_by_text("root (admin)")).to_be_visible()
    check_page(page, "dashboard", "Dashboard")

    # --- Log out, a wrong password, log in. ---
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    err = page.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(err.first).to_be_visible()
    result["login_wrong_password"] = err.first.inner_text()
    page.get_by_label("Password").fill(PW)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")

    # --- Users and keys: the CA, import a PKCS#12, issue, export, revoke. ---
    page.get_by_role("link", name="Users and keys").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Users and keys")
    root_ca = page.get_by_role("form", name="Create a root CA")
    root_ca.get_by_label("CA name").fill("Box CA")
    root_ca.get_by_label("Mail domains").fill("example.org")
    root_ca.get_by_role("button", name="Create the CA").click()
    expect(page.get_by_text(re.compile("State: active"))).to_be_visible()
    imp = page.get_by_role("form", name="Import a PKCS#12 file")
    imp.get_by_label("PKCS#12 file").set_input_files(P12)
    imp.get_by_label("File password").fill("wrong")
    imp.get_by_role("button", name="Import").click()
    bad = imp.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    result["import_wrong_password"] = bad.first.inner_text()
    # Dropped onto the drop zone (a real DataTransfer with the file's bytes), it is the one sent.
    dt = page.evaluate_handle("""(b64) => { const dt = new DataTransfer();
        const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        dt.items.add(new File([bin], 'dropped.p12', {type: 'application/x-pkcs12'}));
        return dt; }""", base64.b64encode(open(P12, "rb").read()).decode())
    imp.locator(".drop").dispatch_event("dragover", {"dataTransfer": dt})
    imp.locator(".drop").dispatch_event("drop", {"dataTransfer": dt})
    expect(imp.get_by_text("Chosen: dropped.p12")).to_be_visible()
    assert imp.get_by_label("PKCS#12 file").evaluate("i => i.files[0].name") == "dropped.p12"
    imp.get_by_label("File password").fill("corpus")
    imp.get_by_role("button", name="Import").click()
    expect(imp.get_by_text(re.compile("Imported 1 key"))).to_be_visible()
    iss = page.get_by_role("form", name="Issue a certificate from the box's CA")
    iss.get_by_label("User's address").fill("dave@example.org")
    iss.get_by_role("button", name="Issue").click()
    expect(iss.get_by_text(re.compile("Issued: dave@example.org"))).to_be_visible()
    rows = page.locator("#keys-list tbody tr")
    expect(rows.filter(has_text="corpus-rsa@example.test")).to_have_count(1)
    expect(rows.filter(has_text="dave@example.org")).to_have_count(1)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export certificate of dave@example.org").click()
    pem = open(dl.value.path()).read()
    assert pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:80]
    result["exported_name"] = dl.value.suggested_filename
    # Search narrows the list.
    page.get_by_label("Search users").fill("dave")
    expect(rows).to_have_count(1)
    shot(page, "keys")
    # A user's keys in detail; renewal from the box's CA.
    page.get_by_role("button", name="Details of dave@example.org").click()
    detail = page.get_by_role("region", name="Keys of dave@example.org")
    expect(detail.get_by_role("heading", name="Keys of dave@example.org")).to_be_visible()
    expect(detail.locator("tbody tr")).to_have_count(1)
    expect(detail.get_by_text("signs, receives")).to_be_visible()
    detail.get_by_role("button", name="Renew from the box's CA").click()
    expect(page.get_by_text(re.compile("Renewed: new key #"))).to_be_visible()
    expect(detail.locator("tbody tr")).to_have_count(2)
    # Revoking asks first: cancel changes nothing, confirm revokes.
    dave_active = rows.filter(has_text="dave@example.org").filter(has_text="active")
    before = dave_active.count()
    assert before >= 1, before
    page.get_by_role("button", name="Revoke certificates of dave@example.org").first.click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(dave_active).to_have_count(before)
    page.get_by_role("button", name="Revoke certificates of dave@example.org").first.click()
    shot(page, "keys-confirm")
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text(re.compile("Revoked for dave@example.org: [0-9A-Fa-f]"))).to_be_visible()
    expect(dave_active).to_have_count(0)
    # The imported user's keys: exported as PKCS#12 with a password, then retired.
    page.get_by_label("Search users").fill("")
    page.get_by_role("button", name="Details of corpus-rsa@example.test").click()
    detail = page.get_by_role("region", name="Keys of corpus-rsa@example.test")
    exp = detail.get_by_role("form", name="Export the private keys (PKCS#12)")
    exp.get_by_label("Password for the file").fill("export password")
    with page.expect_download() as dl:
        exp.get_by_role("button", name="Export keys").click()
    assert dl.value.suggested_filename == "corpus-rsa@example.test.p12", dl.value.suggested_filename
    assert os.path.getsize(dl.value.path()) > 500
    detail.get_by_role("button", name="Retire").click()
    page.get_by_role("dialog").get_by_role("button", name="Retire").click()
    expect(detail.get_by_text(re.compile("Retired: #"))).to_be_visible()
    expect(rows.filter(has_text="corpus-rsa@example.test").filter(has_text="retired")).to_have_count(1)
    # The CA's certificate for mail clients.
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download the CA certificate").click()
    assert open(dl.value.path()).read().startswith("-----BEGIN CERTIFICATE-----")
    assert not console_errors, console_errors

    # --- External certificates: added from a file, deleted after confirming. ---
    page.get_by_role("link", name="Certificates").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Certificates")
    add = page.get_by_role("form", name="Add certificates")
    add.get_by_label("Or paste PEM").fill("not a certificate")
    add.get_by_role("button", name="Add").click()
    bad = add.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    result["certificate_garbage"] = bad.first.inner_text()
    add.get_by_label("Or paste PEM").fill("")
    add.get_by_label("Certificate file (PEM or DER)").set_input_files(EC_CERT)
    add.get_by_role("button", name="Add").click()
    expect(add.get_by_text("Stored for corpus-ec@example.test.")).to_be_visible()
    check_page(page, "certificates", "Certificates")
    page.get_by_role("button", name="Delete the certificate of corpus-ec@example.test").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Certificate deleted.")).to_be_visible()
    expect(page.get_by_text("No external certificates stored.")).to_be_visible()
    # A certificate whose subject is markup: shown as text, never run (it stays, ending in 10
    # days, for the dashboard's expiries).
    import subprocess, tempfile
    xdir = tempfile.mkdtemp()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", os.path.join(xdir, "k"), "-out", os.path.join(xdir, "c"), "-days", "10",
                    "-subj", "/CN=" + XSS, "-addext", "subjectAltName=email:xss@example.org",
                    "-addext", "extendedKeyUsage=emailProtection", "-addext", "basicConstraints=critical,CA:FALSE",
                    "-addext", "keyUsage=digitalSignature,keyAgreement"], check=True, capture_output=True)
    add.get_by_label("Certificate file (PEM or DER)").set_input_files([])
    add.get_by_label("Or paste PEM").fill(open(os.path.join(xdir, "c")).read())
    add.get_by_role("button", name="Add").click()
    expect(add.get_by_text("Stored for xss@example.org.")).to_be_visible()
    expect(page.locator("tbody tr").filter(has_text="xss@example.org")).to_contain_text(XSS)
    # The lookup tester: the source, the validation result, the certificate's details.
    look = page.get_by_role("form", name="Look up a certificate")
    look.get_by_label("Email address").fill("not an address")
    look.get_by_role("button", name="Look up").click()
    bad = look.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_contain_text("not an email address")
    look.get_by_label("Email address").fill("xss@example.org")
    look.get_by_role("button", name="Look up").click()
    found = page.get_by_role("region", name="Lookup of xss@example.org")
    expect(found).to_be_visible()
    result["lookup_xss"] = found.inner_text()
    expect(found).to_contain_text(XSS)
    # Blocked from the lookup: the directory then refuses it; unblocked, it is found again.
    found.get_by_role("button", name="Block this certificate").click()
    page.get_by_role("dialog").get_by_role("button", name="Block").click()
    expect(page.locator("#blocked tbody tr")).to_have_count(1)
    look.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("region", name="Lookup of xss@example.org")).to_contain_text("No valid certificate")
    blk = page.get_by_role("form", name="Block a certificate")
    blk.get_by_label("SHA-256 fingerprint").fill("not a fingerprint")
    blk.get_by_role("button", name="Block").click()
    expect(blk.locator(".field-error, .form-error").filter(has_text=re.compile(".")).first).to_contain_text("sha256")
    page.locator("#blocked").get_by_role("button", name=re.compile("^Unblock")).click()
    expect(page.get_by_text("No certificate is blocked.")).to_be_visible()
    look.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("region", name="Lookup of xss@example.org")).to_contain_text("Valid: found by the source")
    look.get_by_label("Email address").fill("nobody@example.net")
    look.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("region", name="Lookup of nobody@example.net")).to_contain_text("No valid certificate")
    shot(page, "certificates-lookup")
    assert page.evaluate("window.__xss === undefined && !document.querySelector('main img')"), "markup ran"

    # --- The support bundle from the dashboard; its counts and the expiries. ---
    page.get_by_role("link", name="Dashboard").click()
    exp_card = page.locator("#expiries")
    expect(exp_card.locator("tbody tr").filter(has_text="xss@example.org")).to_contain_text("external certificate")
    expect(page.locator("#queue-counts")).to_contain_text("deferred")
    expect(page.get_by_text("TPM device")).to_be_visible()
    expect(page.locator("#messages table").first.locator("tbody tr")).to_have_count(5)
    # The docking calls the test made before (one decrypted, one refused): the day counts them
    # (this hour too,
    # unless an hour began since).
    expect(page.locator("#messages table").first.locator("tbody tr").filter(has_text="refused")).to_have_text(re.compile(r"refused\s*[01]\s*1$"))
    page.locator("#messages summary").click()
    expect(page.locator("#messages details tbody tr").first).to_be_visible()
    expect(page.locator("#messages table").first.locator("tbody tr").filter(has_text="decrypted")).to_have_text(re.compile(r"decrypted\s*[01]\s*1$"))
    assert page.evaluate("window.__xss === undefined && !document.querySelector('main img')"), "markup ran"
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download a support bundle").click()
    assert open(dl.value.path(), "rb").read(2) == b"\x1f\x8b", "gzip"

    # --- API tokens: created and shown once, revoked after confirming. ---
    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("API tokens")
    dock = page.locator("[data-tokens=docking]")
    dock.get_by_label("Name").fill("bad name!")
    dock.get_by_label("decrypt").check()
    dock.get_by_role("button", name="Create").click()
    bad = dock.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    result["token_bad_name"] = bad.first.inner_text()
    dock.get_by_label("Name").fill("gw")
    dock.get_by_role("button", name="Create").click()
    token = dock.locator("code.token").inner_text()
    assert token.startswith("sgt_"), token
    result["docking_token"] = token
    expect(dock.locator("tbody tr").filter(has_text="gw")).to_have_count(1)
    adm = page.locator("[data-tokens=admin]")
    adm.get_by_label("Name").fill("monitor")
    adm.get_by_label("Role").select_option("read-only")
    adm.get_by_role("button", name="Create").click()
    assert adm.locator("code.token").inner_text().startswith("sga_")
    check_page(page, "tokens", "API tokens")
    page.get_by_role("button", name="Revoke gw").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(dock.get_by_text("gw revoked.")).to_be_visible()
    expect(dock.locator("tbody tr").filter(has_text="gw")).to_have_count(0)

    # --- The audit log: every change above is there; filter; page. ---
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    expect(page.get_by_text(re.compile("Audit chain verified"))).to_be_visible()
    body = page.locator("tbody")
    for action in ["admin.claim", "admin.login", "admin.key-import", "admin.key-issue", "admin.key-revoke", "admin.token-revoke"]:
        expect(body.get_by_text(re.compile("^" + re.escape(action))).first).to_be_visible()
    page.get_by_label("Action starts with").fill("admin.token")
    page.get_by_role("button", name="Show").click()
    # token-create and token-revoke of "gw" (admin.api-token-create does not start so).
    expect(page.get_by_role("status").filter(has_text=re.compile("^Entries 1–"))).to_have_text("Entries 1–2 of 2")
    actions = body.locator("td:nth-child(4)").all_inner_texts()
    assert actions and all(a.startswith("admin.token") for a in actions), actions
    result["audit_token_entries"] = actions
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export the matching entries (JSON)").click()
    exported = json.load(open(dl.value.path()))
    assert [e["action"] for e in exported] == actions, exported
    page.get_by_role("button", name="Verify the whole chain now").click()
    expect(page.get_by_text(re.compile(r"Audit chain verified \(full,"))).to_be_visible()
    check_page(page, "audit", "Audit log")

    # --- The queue: the waiting message is retried, held, released and deleted. ---
    page.get_by_role("link", name="Queue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mail queue")
    row = page.locator("tbody tr").filter(has_text=QUEUED)
    expect(row).to_have_count(1)
    check_page(page, "queue", "Mail queue")
    def wait_deferred(min_attempts=1):
        # The page shows what the API says when it is asked: Refresh until the attempt ended.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (row.locator(".badge").inner_text() == "deferred"
                    and int(row.locator("td:nth-child(7)").inner_text()) >= min_attempts):
                return
            time.sleep(0.3)
            page.get_by_role("button", name="Refresh").click()
            page.wait_for_load_state("networkidle")
        raise AssertionError("the message never came back to deferred: " + row.inner_text())
    wait_deferred()
    attempts = int(row.locator("td:nth-child(7)").inner_text())
    page.get_by_role("button", name=f"Retry {QUEUED}").click()
    expect(page.get_by_text(f"{QUEUED}: retry done.")).to_be_visible()
    wait_deferred(attempts + 1)
    page.get_by_role("button", name=f"Hold {QUEUED}").click()
    expect(page.get_by_text(f"{QUEUED}: hold done.")).to_be_visible()
    expect(row.locator(".badge")).to_have_text("held")
    page.get_by_role("button", name=f"Release {QUEUED}").click()
    expect(page.get_by_text(f"{QUEUED}: release done.")).to_be_visible()
    expect(row.locator(".badge")).not_to_have_text("held")
    # Released, it is tried at once (the next hop is still down); delete once that attempt ended
    # (while it runs, a change is refused with a 409 the page shows).
    wait_deferred(attempts + 2)
    page.get_by_role("button", name=f"Delete {QUEUED}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("[data-page=queue] > p[role=status]")).to_have_text(f"{QUEUED}: delete done.")
    expect(page.get_by_text("The queue is empty.")).to_be_visible()

    # --- Administrators: a weak password shown, then a read-only account. ---
    page.get_by_role("link", name="Administrators").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Administrators")
    new = page.get_by_role("form", name="New account")
    new.get_by_label("Username").fill("viewer")
    new.get_by_label("Role").select_option("read-only")
    new.get_by_label("Password").fill("short")
    new.get_by_role("button", name="Create account").click()
    bad = new.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    result["account_weak_password"] = bad.first.inner_text()
    new.get_by_label("Password").fill(PW)
    new.get_by_role("button", name="Create account").click()
    expect(new.get_by_text("viewer (read-only) created.")).to_be_visible()
    own = page.get_by_role("form", name="Change your password")
    own.get_by_label("Current password").fill("not my password")
    own.get_by_label("New password").fill(PW + " 2")
    own.get_by_role("button", name="Change password").click()
    bad = own.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    check_page(page, "accounts", "Administrators")
    # Sessions: the administrator's own is marked; a second one can be ended.
    sessions = page.locator("#sessions tbody tr")
    expect(sessions.filter(has_text="this session")).to_have_count(1)
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    op = other.new_page()
    op.on("console", on_console)
    op.goto(BASE + "/")
    op.get_by_label("Username").fill("root")
    op.get_by_label("Password").fill(PW)
    op.get_by_role("button", name="Log in").click()
    expect(op.get_by_role("heading", level=1)).to_have_text("Dashboard")
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_role("link", name="Administrators").click()
    expect(sessions).to_have_count(2)
    page.locator("#sessions").get_by_role("button", name=re.compile("^End session of root")).click()
    page.get_by_role("dialog").get_by_role("button", name="End session").click()
    expect(page.get_by_text("The session of root ended.")).to_be_visible()
    expect(sessions).to_have_count(1)
    op.get_by_role("link", name="Audit log").click()
    expect(op.get_by_role("heading", level=1)).to_have_text("Log in")
    other.close()
    check_page(page, "accounts", "Administrators")
    admin_session = page.evaluate("""async () => (await (await fetch('/api/v1/admin/sessions')).json())
        .find(s => s.current).id""")

    # --- Settings: the server's validation shown at the field; a live change; a change that
    # waits for a restart; one that cannot be applied is rolled back (409). ---
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Settings")
    smtp = page.get_by_role("form", name="[smtp]")
    smtp.get_by_label("retry_secs", exact=True).fill("soon")
    smtp.get_by_role("button", name="Save [smtp]").click()
    err = smtp.locator('[data-field="smtp.retry_secs"] .field-error')
    expect(err).to_contain_text("smtp.retry_secs")
    result["settings_invalid"] = err.inner_text()
    expect(smtp.get_by_label("retry_secs", exact=True)).to_have_attribute("aria-invalid", "true")
    smtp.get_by_label("retry_secs", exact=True).fill("900")
    smtp.get_by_role("button", name="Save [smtp]").click()
    expect(page.locator("#settings-status")).to_contain_text("Saved: smtp.retry_secs.")
    expect(page.locator("#restart-needed")).to_contain_text("smtp.retry_secs")
    log = page.get_by_role("form", name="[log]")
    expect(log.locator('[data-field="log.level"] .hint')).to_contain_text("applies at once")
    log.get_by_label("level", exact=True).fill("debug")
    log.get_by_role("button", name="Save [log]").click()
    expect(page.locator("#settings-status")).to_contain_text("In force now: log.level.")
    # From the keyboard: Enter in a field saves its section.
    log = page.get_by_role("form", name="[log]")
    log.get_by_label("level", exact=True).fill("info")
    # The status still says the last save: empty it, so the wait below is for this one (the
    # page redraws its forms after a save; filling one before that redraw would be lost).
    page.locator("#settings-status").evaluate("e => { e.textContent = ''; }")
    log.get_by_label("level", exact=True).press("Enter")
    expect(page.locator("#settings-status")).to_contain_text("Saved: log.level.")
    expect(page.get_by_role("form", name="[log]").get_by_label("level", exact=True)).to_have_value("info")
    admin_port = re.sub(r"^https://[^:]+:", "", BASE).split("/")[0]
    dock = page.get_by_role("form", name="[docking]")
    before = dock.get_by_label("listen", exact=True).input_value()
    dock.get_by_label("listen", exact=True).fill("127.0.0.1:" + admin_port)
    dock.get_by_role("button", name="Save [docking]").click()
    err = dock.locator('[data-field="docking.listen"] .field-error')
    expect(err).to_contain_text("cannot listen on")
    result["settings_conflict"] = err.inner_text()
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("form", name="[docking]").get_by_label("listen", exact=True)).to_have_value(before)
    check_page(page, "settings", "Settings")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=os.path.join(SHOTS, "settings-top.png"))

    # --- Policies: global levels and a subject trigger that is markup (kept as text), a
    # domain's and a user's policy set and removed. ---
    page.get_by_role("navigation").get_by_role("link", name="Policies").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Policies")
    glob = page.get_by_role("form", name="Global policy")
    glob.get_by_label("Encrypt", exact=True).select_option("mandatory")
    glob.get_by_label("Subject trigger", exact=True).fill(XSS)
    glob.get_by_role("button", name="Save the global policy").click()
    expect(page.locator("#policy-status")).to_contain_text("policy.encrypt")
    expect(page.get_by_role("form", name="Global policy").get_by_label("Subject trigger", exact=True)).to_have_value(XSS)
    one = page.get_by_role("form", name="Set a domain's or user's policy")
    one.get_by_label("Domain or address").fill("partner.example")
    one.get_by_label("Encrypt", exact=True).select_option("never")
    one.get_by_role("button", name="Set the policy").click()
    over = page.locator("#overrides tbody tr")
    expect(over.filter(has_text="partner.example")).to_contain_text("never")
    one = page.get_by_role("form", name="Set a domain's or user's policy")
    one.get_by_label("For", exact=True).select_option("user")
    one.get_by_label("Domain or address").fill("ceo@example.org")
    one.get_by_label("Sign", exact=True).select_option("always")
    one.get_by_role("button", name="Set the policy").click()
    expect(over.filter(has_text="ceo@example.org")).to_contain_text("always")
    one = page.get_by_role("form", name="Set a domain's or user's policy")
    one.get_by_label("Domain or address").fill("not a domain!")
    one.get_by_role("button", name="Set the policy").click()
    bad = one.locator('[data-field="name"] .field-error')
    expect(bad).to_contain_text("is not a mail domain")
    result["policy_bad_name"] = bad.inner_text()
    check_page(page, "policies", "Policies")
    page.get_by_role("button", name="Remove the policy of partner.example").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(over.filter(has_text="partner.example")).to_have_count(0)
    expect(over.filter(has_text="ceo@example.org")).to_have_count(1)
    assert page.evaluate("window.__xss === undefined && !document.querySelector('main img')"), "markup ran"
    # The keyboard alone: Remove asks, Cancel has the focus, Escape keeps the entry.
    page.get_by_role("button", name="Remove the policy of ceo@example.org").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog").get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(over.filter(has_text="ceo@example.org")).to_have_count(1)

    # --- An auditor: reads everything, the forms say it cannot change them, and the API
    # refuses it when the page is tampered with (403 shown). ---
    page.get_by_role("link", name="Administrators").click()
    new = page.get_by_role("form", name="New account")
    new.get_by_label("Username").fill("auditor1")
    new.get_by_label("Role").select_option("auditor")
    new.get_by_label("Password").fill(PW)
    new.get_by_role("button", name="Create account").click()
    expect(new.get_by_text("auditor1 (auditor) created.")).to_be_visible()
    actx_a = browser.new_context(viewport={"width": 1280, "height": 900})
    ap_a = actx_a.new_page()
    ap_a.on("console", on_console)
    ap_a.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
    ap_a.goto(BASE + "/")
    ap_a.get_by_label("Username").fill("auditor1")
    ap_a.get_by_label("Password").fill(PW)
    ap_a.get_by_role("button", name="Log in").click()
    expect(ap_a.get_by_text("auditor1 (auditor)")).to_be_visible()
    ap_a.get_by_role("link", name="Settings").click()
    log = ap_a.get_by_role("form", name="[log]")
    expect(log.get_by_text("only an administrator changes them")).to_be_visible()
    expect(log.get_by_role("button", name="Save [log]")).to_be_disabled()
    shot(ap_a, "settings-auditor")
    ap_a.evaluate("document.querySelectorAll('fieldset[disabled]').forEach(f => f.disabled = false)")
    log.get_by_label("level", exact=True).fill("trace")
    log.get_by_role("button", name="Save [log]").click()
    refusal = log.locator(".form-error, .field-error").filter(has_text=re.compile("."))
    expect(refusal.first).to_contain_text("may not")
    result["auditor_settings_write"] = refusal.first.inner_text()
    ap_a.get_by_role("navigation").get_by_role("link", name="Policies").click()
    expect(ap_a.get_by_role("form", name="Global policy")).to_have_count(0)
    expect(ap_a.locator("main")).to_contain_text(XSS)
    assert ap_a.evaluate("window.__xss === undefined && !document.querySelector('main img')"), "markup ran"
    ap_a.get_by_role("link", name="Administrators").click()
    expect(ap_a.locator("#sessions tbody tr")).to_have_count(1)
    denied = ap_a.evaluate("""async (id) => {
        const s = await (await fetch('/api/v1/admin/session')).json();
        const r = await fetch('/api/v1/admin/sessions/' + id, {method: 'DELETE',
            headers: {'X-CSRF-Token': s.csrf_token}});
        return [r.status, (await r.json()).detail]; }""", admin_session)
    assert denied[0] == 403, denied
    result["auditor_session_revoke"] = denied
    actx_a.close()
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")

    # --- From the browser's side: a change without the CSRF token is refused. ---
    status = page.evaluate("""async () => (await fetch('/api/v1/admin/tokens',
        {method: 'POST', headers: {'Content-Type': 'application/json'},
         body: JSON.stringify({name: 'csrf', scopes: ['decrypt']})})).status""")
    assert status == 403, status
    result["csrf_missing_status"] = status

    # --- A read-only account sees no forms that change anything, and the API refuses it. ---
    vctx = browser.new_context(viewport={"width": 1280, "height": 900})
    vp = vctx.new_page()
    vp.on("console", on_console)
    vp.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
    vp.goto(BASE + "/")
    vp.get_by_label("Username").fill("viewer")
    vp.get_by_label("Password").fill(PW)
    vp.get_by_role("button", name="Log in").click()
    expect(vp.get_by_text("viewer (read-only)")).to_be_visible()
    vp.get_by_role("link", name="Users and keys").click()
    expect(vp.locator("#keys-list tbody tr").filter(has_text="dave@example.org")).to_have_count(2)
    expect(vp.get_by_role("form", name="Import a PKCS#12 file")).to_have_count(0)
    expect(vp.get_by_role("button", name=re.compile("^Revoke"))).to_have_count(0)
    assert "null" not in vp.locator("main").inner_text(), vp.locator("main").inner_text()
    denied = vp.evaluate("""async () => {
        const s = await (await fetch('/api/v1/admin/session')).json();
        const r = await fetch('/api/v1/admin/keys/issue', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
            body: JSON.stringify({user: 'eve@example.org'})});
        return [r.status, (await r.json()).title]; }""")
    assert denied[0] == 403, denied
    result["read_only_issue"] = denied
    # The administrator deletes the account: its open page is sent to the login at its next call.
    page.get_by_role("link", name="Administrators").click()
    page.get_by_role("button", name="Delete viewer").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("viewer deleted.")).to_be_visible()
    vp.get_by_role("link", name="Audit log").click()
    expect(vp.get_by_role("heading", level=1)).to_have_text("Log in")
    vctx.close()

    # --- System: without the exact phrase nothing is reset. ---
    page.get_by_role("link", name="System").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("System")
    fr = page.get_by_role("form", name="Factory reset")
    fr.get_by_label("Type: factory reset").fill("factory reset please")
    fr.get_by_role("button", name="Factory reset").click()
    bad = fr.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    result["factory_reset_wrong_phrase"] = bad.first.inner_text()
    check_page(page, "system", "System")

    # --- Another site's page in the administrator's browser (logged in): it can neither
    # frame the UI nor make a change with the session's cookie. ---
    evil = ctx.new_page()
    evil.on("console", lambda m: None)
    evil.set_content(f'<iframe id="f" src="{BASE}/#/tokens" width="600" height="400"></iframe>')
    evil.wait_for_timeout(1500)
    framed = [f for f in evil.frames if f != evil.main_frame]
    assert framed, "no frame"
    try:
        framed_text = framed[0].evaluate("document.body ? document.body.innerText : ''")
    except Exception:  # a blocked frame is an error page of another origin
        framed_text = ""
    assert "Sealgate" not in framed_text and "API tokens" not in framed_text, framed_text
    evil.evaluate(f"""() => fetch('{BASE}/api/v1/admin/tokens', {{method: 'POST', mode: 'no-cors',
        credentials: 'include', headers: {{'Content-Type': 'text/plain'}},
        body: JSON.stringify({{name: 'evil', scopes: ['decrypt']}})}}).catch(() => null)""")
    evil.set_content('<form id="x" method="POST" action="' + BASE + '/api/v1/admin/admin-tokens" enctype="text/plain">'
                     '<input name=\'{"name":"evil2","role":"admin","x":"\' value=\'"}\'></form>')
    with evil.expect_navigation():
        evil.evaluate("document.getElementById('x').submit()")
    evil.close()
    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("API tokens")
    expect(page.locator("tbody tr").filter(has_text="monitor")).to_have_count(1)
    expect(page.locator("tbody tr").filter(has_text="evil")).to_have_count(0)

    # --- The keyboard alone: a destructive action's dialog opens on Cancel, Escape closes it. ---
    page.get_by_role("button", name="Revoke monitor").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.locator("tbody tr").filter(has_text="monitor")).to_have_count(1)

    # --- A phone-sized screen: the dashboard still fits. ---
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "dashboard-phone")

    csp_violations += page.evaluate("window.__csp")
    assert not csp_violations, csp_violations
    assert not console_errors, console_errors
    result["api_answers_shown"] = len(api_answers)

    # --- Accessibility: axe-core (WCAG 2 A and AA rules) on every page. Its script is
    # injected, which the policy rightly refuses: these contexts bypass the CSP (and only
    # these; the pages above ran under it). ---
    axe = open(AXE).read()
    state = ctx.storage_state()
    violations = {}
    timings = {}
    for logged_in, pages in [(False, ["login", "claim"]),
                             (True, ["dashboard", "keys", "certificates", "policies", "tokens", "audit", "queue", "settings", "accounts", "system"])]:
        actx = browser.new_context(bypass_csp=True, storage_state=state if logged_in else None,
                                   viewport={"width": 1280, "height": 900})
        ap = actx.new_page()
        for name in pages:
            t0 = time.monotonic()
            ap.goto(BASE + "/#/" + name)
            expect(ap.locator("main [data-page]")).to_have_attribute("data-page", name)
            timings[name] = round((time.monotonic() - t0) * 1000)
            ap.wait_for_load_state("networkidle")
            ap.add_script_tag(content=axe)
            found = ap.evaluate("""async () => (await axe.run(document,
                {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            targets: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))""")
            if found:
                violations[name] = found
        actx.close()
    result["axe_pages"] = 12
    result["page_ms"] = timings
    print(f"pages interactive (ms, debug build, loaded from scratch): {timings}", flush=True)
    # The 1 s target is the box's (release build); here a generous bound catches a page that hangs.
    assert max(timings.values()) < 5000, timings
    assert not violations, json.dumps(violations, indent=1)

    # --- TOTP: set up from the page with the secret it shows once; then login asks for it. ---
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Administrators").click()
    page.get_by_role("button", name="Set up TOTP").click()
    secret = page.locator(".once code.token").first.inner_text()
    step = int(time.time()) // 30
    totp = page.get_by_role("form", name="Turn TOTP on")
    totp.get_by_label("Code from the app").fill("000000" if totp_code(secret, step) != "000000" else "111111")
    totp.get_by_role("button", name="Turn on").click()
    bad = totp.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(bad.first).to_be_visible()
    totp.get_by_label("Code from the app").fill(totp_code(secret, step))
    totp.get_by_role("button", name="Turn on").click()
    expect(page.get_by_text("TOTP is on: login asks for a code from now on.")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PW)
    page.get_by_role("button", name="Log in").click()
    shown = page.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(shown).to_have_count(1)
    result["login_without_totp"] = shown.inner_text()
    expect(page.locator("[data-field=totp_code] .field-error")).to_contain_text("TOTP code is required")
    # Each code works once: the next step's code (within the allowed drift).
    page.get_by_label("TOTP code").fill(totp_code(secret, step + 1))
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    assert not console_errors, console_errors
    # Last: the policy really is enforced (Trusted Types: no string reaches innerHTML).
    blocked = page.evaluate("""() => { try { document.body.innerHTML = '<b>x</b>'; return false; }
        catch (e) { return e instanceof TypeError; } }""")
    assert blocked, "innerHTML with a string was allowed"
    browser.close()

print("RESULT " + json.dumps(result), flush=True)
