# The TLS certificate page in a real browser (Debian's Chromium, headless, Playwright with
# executable_path): a key and CSR made on the box, the CSR signed with `openssl x509 -req` as
# the organisation's CA, wrong certificates refused and shown (another key; without the
# names asked for), the right one installed and served by the listeners at once; then a key
# and certificate pair uploaded (a wrong pair refused, a PKCS#12 file installed).
# Started by tests/docking/webui_tls.rs; prints RESULT {...}.
import hashlib, json, os, re, ssl, subprocess, sys, tempfile, time
from playwright.sync_api import Browser, sync_playwright, expect

BASE = os.environ["BASE"]
SETUP = os.environ["SETUP"]
SHOTS = os.environ["SHOTS"]
CHROMIUM = os.environ["CHROMIUM"]
CORP_CA = os.environ["CORP_CA"]
CORP_KEY = os.environ["CORP_KEY"]
AXE = os.environ.get("AXE", "")
PORTS = [int(p) for p in os.environ["PORTS"].split(",")]
PW = "correct horse battery staple"
os.makedirs(SHOTS, exist_ok=True)
# Waits are limits, not timings: beside the QEMU suite a step can take tens of seconds.
PATIENCE_MS = 90_000
expect.set_options(timeout=PATIENCE_MS)
_new_context = Browser.new_context
Browser.new_context = lambda self, **kw: _patient(_new_context(self, **kw))
def _patient(ctx):
    ctx.set_default_timeout(PATIENCE_MS)
    return ctx
tmp = tempfile.mkdtemp()
result = {}
console_errors = []


def on_console(msg):
    if msg.type != "error":
        return
    url = (msg.location or {}).get("url", "")
    # 4xx answers of the admin API are shown by the page (that is what is tested).
    if "/api/v1/admin/" in url and re.match(r"Failed to load resource: the server responded with a status of 4\d\d", msg.text):
        return
    console_errors.append(f"{msg.text} ({url})")


def openssl(*args):
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout


def served_sha256(port):
    # What the listener serves now, from a fresh connection (no verification: the point is
    # which certificate comes, not whether this client trusts it).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="sealgate.example.org") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def api_json(page, method, path, body=None):
    return page.evaluate("""async ([method, path, body]) => {
        const s = await (await fetch('/api/v1/admin/session')).json();
        const init = {method, headers: {'X-CSRF-Token': s.csrf_token}};
        if (body !== null) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
        const r = await fetch('/api/v1/admin' + path, init);
        const t = await r.text();
        let j = null; try { j = JSON.parse(t); } catch (e) {}
        return [r.status, r.headers.get('content-type'), j === null ? t : j]; }""", [method, path, body])


def form_error(form):
    shown = form.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(shown.first).to_be_visible()
    return shown.first


def sign(csr, out, ext_lines, copy_san=True):
    ext = os.path.join(tmp, os.path.basename(out) + ".ext")
    open(ext, "w").write("\n".join(ext_lines) + "\n")
    args = ["x509", "-req", "-in", csr, "-CA", CORP_CA, "-CAkey", CORP_KEY, "-set_serial",
            str(int(time.time() * 1000)), "-days", "30", "-extfile", ext, "-out", out]
    if copy_san:
        args += ["-copy_extensions", "copy"]
    openssl(*args)
    return out


with sync_playwright() as p:
    # The box's certificate changes during the test (a new key): the browser is told to
    # accept whatever the box serves; which certificate that is gets checked from Python.
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--ignore-certificate-errors"])
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
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

    # --- The certificate served now: the box's self-signed one. ---
    page.get_by_role("link", name="TLS certificate").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("TLS certificate")
    now = page.get_by_role("region", name="Served now")
    expect(now).to_contain_text("(self-signed)")
    first = now.locator("code.fp").inner_text()
    assert all(served_sha256(port) == first for port in PORTS), "the page shows what is served"
    result["self_signed_sha256"] = first

    # --- A key and CSR: a bad name is shown at its field; then made. ---
    req = page.get_by_role("form", name="Make a key and CSR")
    req.get_by_label("Common name").fill("sealgate.example.org")
    req.get_by_label("DNS names").fill("sealgate.example.org, under_score.example.org")
    req.get_by_role("button", name="Make the key and CSR").click()
    bad = req.locator('[data-field="dns_names"] .field-error')
    expect(bad).to_contain_text("is not a DNS name")
    result["request_bad_name"] = bad.inner_text()
    req.get_by_label("DNS names").fill("sealgate.example.org, localhost")
    req.get_by_label("IP addresses").fill("127.0.0.1")
    req.get_by_role("button", name="Make the key and CSR").click()
    waiting = page.get_by_role("region", name="Waiting for the signed certificate")
    expect(waiting).to_contain_text("sealgate.example.org, localhost, 127.0.0.1")
    with page.expect_download() as dl:
        waiting.get_by_role("button", name="Download the CSR").click()
    csr = os.path.join(tmp, "box.csr")
    dl.value.save_as(csr)
    text = openssl("req", "-in", csr, "-noout", "-text", "-verify")
    assert "DNS:sealgate.example.org" in text and "IP Address:127.0.0.1" in text, text
    # The key never left the box: the CSR download is the request only.
    assert "PRIVATE KEY" not in open(csr).read()
    server_ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                  "extendedKeyUsage=serverAuth"]
    good = sign(csr, os.path.join(tmp, "box.crt"), server_ext)

    # Another key with the same names, signed by the same CA: refused, shown, nothing changed.
    other_key = os.path.join(tmp, "other.key")
    other_csr = os.path.join(tmp, "other.csr")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", other_key, "-out", other_csr, "-subj", "/CN=sealgate.example.org",
            "-addext", "subjectAltName=DNS:sealgate.example.org,DNS:localhost,IP:127.0.0.1")
    wrong_key = sign(other_csr, os.path.join(tmp, "other.crt"), server_ext)
    install = waiting.get_by_role("form", name="Install the signed certificate")
    install.get_by_label("Certificate file (PEM or DER)").set_input_files(wrong_key)
    install.get_by_role("button", name="Install").click()
    shown = form_error(install)
    expect(shown).to_contain_text("not for the key of the box's request")
    result["install_other_key"] = shown.inner_text()
    # The box's key, but without the names it asked for: refused.
    no_names = sign(csr, os.path.join(tmp, "nonames.crt"), server_ext, copy_san=False)
    install.get_by_label("Certificate file (PEM or DER)").set_input_files(no_names)
    install.get_by_role("button", name="Install").click()
    shown = form_error(install)
    expect(shown).to_contain_text("names no DNS name")
    result["install_no_names"] = shown.inner_text()
    # A chain whose CA did not sign it: refused at the chain.
    stranger = os.path.join(tmp, "stranger.crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", os.path.join(tmp, "stranger.key"), "-out", stranger, "-subj", "/CN=Stranger CA", "-days", "30")
    install.get_by_label("Certificate file (PEM or DER)").set_input_files(good)
    install.get_by_label("The chain above it (PEM)").fill(open(stranger).read())
    install.get_by_role("button", name="Install").click()
    shown = form_error(install)
    expect(install.locator('[data-field="chain"] .field-error')).to_contain_text("the chain does not verify")
    result["install_wrong_chain"] = shown.inner_text()
    shot_path = os.path.join(SHOTS, "tls-refused.png")
    page.screenshot(path=shot_path, full_page=True)
    status, _, overview = api_json(page, "GET", "/tls")
    assert status == 200 and overview["sha256"] == first and overview["request"], overview
    assert all(served_sha256(port) == first for port in PORTS), "a refusal changed nothing"
    # Without the CSRF token the change is refused from the browser's side too.
    status = page.evaluate("""async (pem) => (await fetch('/api/v1/admin/tls/certificate', {method: 'PUT',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({certificate: pem})})).status""",
                           open(good).read())
    assert status == 403, status
    result["install_without_csrf"] = status

    # --- The right certificate with its chain: installed, served at once by every listener. ---
    install.get_by_label("The chain above it (PEM)").fill(open(CORP_CA).read())
    install.get_by_label("Certificate file (PEM or DER)").set_input_files(good)
    install.get_by_role("button", name="Install").click()
    expect(install.get_by_text(re.compile("Installed: .*sealgate.example.org.*Served from the next connection on"))).to_be_visible()
    expect(page.get_by_role("region", name="Waiting for the signed certificate")).to_have_count(0)
    now = page.get_by_role("region", name="Served now")
    expect(now).to_contain_text("Docking Test CA")
    expect(now).to_contain_text("sealgate.example.org, localhost, 127.0.0.1")
    expect(now).to_contain_text("2 certificate(s)")
    installed = now.locator("code.fp").inner_text()
    want = hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(good).read())).hexdigest()
    assert installed == want != first, (installed, want, first)
    for port in PORTS:
        assert served_sha256(port) == want, f"port {port} serves the new certificate without a restart"
    result["installed_sha256"] = want
    page.screenshot(path=os.path.join(SHOTS, "tls.png"), full_page=True)

    # --- A pair made elsewhere: a wrong pair refused, a PKCS#12 file installed. ---
    pair_key = os.path.join(tmp, "pair.key")
    pair_crt = os.path.join(tmp, "pair.crt")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", pair_key, "-out", pair_crt,
            "-days", "10", "-subj", "/CN=pair.example.org", "-addext", "subjectAltName=DNS:pair.example.org,IP:127.0.0.1",
            "-addext", "extendedKeyUsage=serverAuth", "-addext", "basicConstraints=critical,CA:FALSE")
    up = page.get_by_role("form", name="Upload a key and certificate")
    up.get_by_label("Or the certificate (PEM)").fill(open(pair_crt).read())
    up.get_by_label("With its private key (PEM)").fill(open(other_key).read())
    up.get_by_role("button", name="Upload").click()
    shown = form_error(up)
    expect(up.locator('[data-field="key"] .field-error')).to_contain_text("not the certificate's key")
    result["pair_wrong_key"] = shown.inner_text()
    p12 = os.path.join(tmp, "pair.p12")
    openssl("pkcs12", "-export", "-inkey", pair_key, "-in", pair_crt, "-out", p12, "-passout", "pass:s3cret")
    up.get_by_label("Or the certificate (PEM)").fill("")
    up.get_by_label("With its private key (PEM)").fill("")
    up.get_by_label("PKCS#12 file").set_input_files(p12)
    up.get_by_label("PKCS#12 password").fill("wrong")
    up.get_by_role("button", name="Upload").click()
    expect(up.locator('[data-field="password"] .field-error')).to_contain_text("wrong password")
    up.get_by_label("PKCS#12 file").set_input_files(p12)
    up.get_by_label("PKCS#12 password").fill("s3cret")
    up.get_by_role("button", name="Upload").click()
    expect(up.get_by_text(re.compile("Installed: .*pair.example.org"))).to_be_visible()
    pair_sha = hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(pair_crt).read())).hexdigest()
    for port in PORTS:
        assert served_sha256(port) == pair_sha, f"port {port} serves the uploaded pair"
    expect(page.get_by_role("region", name="Served now")).to_contain_text("pair.example.org")
    result["pair_sha256"] = pair_sha
    # It ends in 10 days: the dashboard lists it among the certificates ending soon.
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#expiries")).to_contain_text("the box's TLS certificate")
    expect(page.locator("#expiries")).to_contain_text("pair.example.org")
    assert not console_errors, console_errors

    # --- Accessibility of the page (axe-core injected: this context bypasses the CSP). ---
    if AXE:
        actx = browser.new_context(bypass_csp=True, storage_state=ctx.storage_state(),
                                   viewport={"width": 1280, "height": 900})
        ap = actx.new_page()
        ap.goto(BASE + "/#/tls")
        expect(ap.locator("main [data-page]")).to_have_attribute("data-page", "tls")
        ap.wait_for_load_state("networkidle")
        ap.add_script_tag(content=open(AXE).read())
        found = ap.evaluate("""async () => (await axe.run(document,
            {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
            .map(v => ({id: v.id, help: v.help, targets: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))""")
        assert not found, json.dumps(found, indent=1)
        result["axe_tls"] = "no violations"
        actx.close()
    browser.close()

print("RESULT " + json.dumps(result), flush=True)
