# The quarantine pages of the web UI in Debian's headless Chromium (Playwright, no browser
# download): an auditor lists, views the encrypted DLP hit decrypted, releases it and deletes
# the virus with a reason; a read-only account has no quarantine page. axe-core on the list
# and the message view. Started by tests/gateway/quarantine_webui.rs.
import json, os, re, sys
import requests
from playwright.sync_api import Browser, sync_playwright, expect

BASE, CA, SETUP = os.environ["BASE"], os.environ["CA"], os.environ["SETUP"]
SPKI, CHROMIUM, AXE, SHOTS = os.environ["SPKI"], os.environ["CHROMIUM"], os.environ["AXE"], os.environ["SHOTS"]
DLP, VIRUS = os.environ["DLP"], os.environ["VIRUS"]
PW = "correct horse battery staple"
A = BASE + "/api/v1/admin"
# Waits are limits, not timings: beside the QEMU suite a step can take tens of seconds.
PATIENCE_MS = 90_000
expect.set_options(timeout=PATIENCE_MS)
_new_context = Browser.new_context
Browser.new_context = lambda self, **kw: _patient(_new_context(self, **kw))
def _patient(ctx):
    ctx.set_default_timeout(PATIENCE_MS)
    return ctx
os.makedirs(SHOTS, exist_ok=True)
errors = []
result = {}

# The accounts, through the API.
r = requests.post(A + "/setup", json={"setup_token": SETUP, "username": "root", "password": PW}, verify=CA)
assert r.status_code == 201, r.text
root = requests.Session()
root.verify = CA
r = root.post(A + "/session", json={"username": "root", "password": PW})
root.headers["X-CSRF-Token"] = r.json()["csrf_token"]
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    assert root.post(A + "/accounts", json={"username": user, "role": role, "password": PW}).status_code == 201


def on_console(msg):
    url = (msg.location or {}).get("url", "")
    if msg.type == "error" and "/api/v1/admin/" in url and re.match(r"Failed to load resource: the server responded with a status of 4\d\d", msg.text):
        return
    if msg.type == "error" or "Content Security Policy" in msg.text or "Trusted Type" in msg.text:
        errors.append(f"{msg.type}: {msg.text} ({url})")


def login(browser, user, bypass_csp=False):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    page = ctx.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(BASE + "/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PW)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    return ctx, page


def axe(page, name):
    page.wait_for_load_state("networkidle")
    page.add_script_tag(content=open(AXE).read())
    found = page.evaluate("""async () => (await axe.run(document,
        {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
        .map(v => ({id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))""")
    assert not found, (name, json.dumps(found, indent=1))


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=[f"--ignore-certificate-errors-spki-list={SPKI}"])

    # --- The auditor (under the page's CSP: no script may run but the UI's). ---
    ctx, page = login(browser, "aud")
    page.get_by_role("link", name="Quarantine").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Quarantine")
    rows = page.get_by_role("region", name="Quarantined messages").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="dlp:nightingale").first).to_be_visible()
    expect(rows.filter(has_text="virus")).to_have_count(1)
    page.screenshot(path=os.path.join(SHOTS, "quarantine.png"), full_page=True)

    # The encrypted DLP hit, decrypted; its markup and script are shown as text only.
    page.get_by_role("button", name=re.compile(f"^View {DLP} ")).click()
    expect(page.get_by_role("heading", name=f"Message {DLP}")).to_be_focused()
    text = page.locator("figure.mailtext pre").first
    expect(text).to_contain_text("The budget of Project Nightingale is attached.")
    expect(page.get_by_text(re.compile("decrypted for you"))).to_be_visible()
    assert page.evaluate("window.__xss === undefined"), "script ran"
    assert page.locator("main img, main script, main iframe").count() == 0
    page.screenshot(path=os.path.join(SHOTS, "quarantine-message.png"), full_page=True)

    # Release it, as it came, with a reason.
    rel = page.get_by_role("form", name="Release")
    rel.get_by_label("Reason").fill("false positive: the budget may go out")
    expect(rel.get_by_label("Send it")).to_have_value("received")
    rel.get_by_role("button", name="Release to its recipients").click()
    expect(page.get_by_role("status")).to_contain_text(f"{DLP}: released to alice@example.org")
    expect(rows).to_have_count(2)

    # The virus: a delete needs a reason (the server says so at the field), then asks first.
    page.get_by_role("button", name=re.compile(f"^View {VIRUS} ")).click()
    expect(page.get_by_role("heading", name=f"Message {VIRUS}")).to_be_focused()
    att = page.get_by_role("region", name="Attachments")
    expect(att.locator("tbody tr").filter(has_text="eicar.com")).to_have_count(1)
    dele = page.get_by_role("form", name="Delete")
    dele.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(dele.locator("[data-field=reason] .field-error")).to_contain_text("reason is required")
    dele.get_by_label("Reason").fill("EICAR test file, not for delivery")
    dele.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_contain_text(f"{VIRUS}: deleted.")
    expect(rows).to_have_count(1)
    assert not errors and not page.evaluate("window.__csp || []"), errors
    ctx.close()

    # --- axe-core on the list and on the message view (CSP bypassed for its script only). ---
    actx, ap = login(browser, "aud", bypass_csp=True)
    ap.goto(BASE + "/#/quarantine")
    expect(ap.get_by_role("heading", level=1)).to_have_text("Quarantine")
    axe(ap, "quarantine")
    ap.get_by_role("button", name=re.compile("^View ")).first.click()
    expect(ap.get_by_role("heading", name=re.compile("^Message "))).to_be_visible()
    axe(ap, "quarantine-message")
    actx.close()

    # --- A user's release link (carol's, still unused): the page, its accessibility. ---
    lctx = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    lp = lctx.new_page()
    lp.goto(BASE + os.environ["LINK"])
    expect(lp.get_by_role("heading", level=1)).to_have_text("Release a held message")
    expect(lp.get_by_role("button", name="Deliver it to my mailbox")).to_be_visible()
    lp.screenshot(path=os.path.join(SHOTS, "quarantine-link.png"), full_page=True)
    axe(lp, "release-link")
    lctx.close()

    # --- A read-only account: no quarantine in the menu, the page sends it away, 403. ---
    rctx, rp = login(browser, "ro")
    expect(rp.get_by_role("link", name="Quarantine")).to_have_count(0)
    rp.goto(BASE + "/#/quarantine")
    expect(rp.get_by_role("heading", level=1)).to_have_text("Dashboard")
    status = rp.evaluate("async () => (await fetch('/api/v1/admin/quarantine')).status")
    assert status == 403, status
    rctx.close()
    browser.close()

assert not errors, errors
print("RESULT " + json.dumps(result), flush=True)
