# The network page in a real browser (Debian's Chromium, headless, Playwright with
# executable_path) against a daemon that manages no network: what the kernel has is shown
# (links, addresses, routes), changes that cannot be applied are refused and shown, and
# DNS views are added and removed. Nothing submitted here could change the host's network:
# only a link that does not exist and malformed values, all refused before any change.
# Started by tests/docking/webui_network.rs; prints RESULT {...}.
import json, os, re, sys
from playwright.sync_api import Browser, sync_playwright, expect

BASE = os.environ["BASE"]
SETUP = os.environ["SETUP"]
SPKI = os.environ["SPKI"]
SHOTS = os.environ["SHOTS"]
CHROMIUM = os.environ["CHROMIUM"]
AXE = os.environ.get("AXE", "")
PW = "correct horse battery staple"
MISSING = "sgtest-none0"
os.makedirs(SHOTS, exist_ok=True)
# Waits are limits, not timings: beside the QEMU suite a step can take tens of seconds.
PATIENCE_MS = 90_000
expect.set_options(timeout=PATIENCE_MS)
_new_context = Browser.new_context
Browser.new_context = lambda self, **kw: _patient(_new_context(self, **kw))
def _patient(ctx):
    ctx.set_default_timeout(PATIENCE_MS)
    return ctx
result = {}
console_errors = []


def on_console(msg):
    if msg.type != "error":
        return
    url = (msg.location or {}).get("url", "")
    if "/api/v1/admin/" in url and re.match(r"Failed to load resource: the server responded with a status of 4\d\d", msg.text):
        return
    console_errors.append(f"{msg.text} ({url})")


def refusal(form):
    shown = form.locator(".field-error, .form-error").filter(has_text=re.compile("."))
    expect(shown.first).to_be_visible()
    return shown.first.inner_text()


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=[f"--ignore-certificate-errors-spki-list={SPKI}"])
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
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

    page.get_by_role("link", name="Network").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Network")
    # Management off: said so; the kernel's links and routes shown, none managed.
    expect(page.locator("#not-managed")).to_contain_text("manages no interface and no route")
    links = page.get_by_role("region", name="The kernel's links")
    lo = links.locator("tbody tr").filter(has=page.get_by_role("cell", name="lo", exact=True))
    expect(lo).to_have_count(1)
    expect(lo).to_contain_text("127.0.0.1/8")
    result["links_shown"] = links.locator("tbody tr").count()
    expect(links.locator("tbody tr").filter(has_text=re.compile(r"\byes\b"))).to_have_count(0)
    expect(page.get_by_role("heading", name="Routes", exact=True)).to_be_visible()
    expect(page.locator("#network-confirm")).to_have_count(0)
    expect(page.get_by_text("None: no interface is managed.")).to_be_visible()

    # A malformed address: refused at the settings' parser, shown.
    iface = page.get_by_role("form", name="Set an interface")
    iface.get_by_label("Link name").fill(MISSING)
    iface.get_by_label("Addresses").fill("300.1.2.3/24")
    iface.get_by_role("button", name="Set the interface").click()
    result["bad_address"] = refusal(iface)
    assert "300.1.2.3" in result["bad_address"], result
    # A link the kernel does not have: refused whole, nothing changed.
    iface.get_by_label("Addresses").fill("192.0.2.10/24")
    iface.get_by_role("button", name="Set the interface").click()
    expect(iface.locator(".field-error, .form-error").filter(has_text=MISSING).first).to_be_visible()
    result["missing_link"] = refusal(iface)
    route = page.get_by_role("form", name="Add a static route")
    route.get_by_label("Destination").fill("not a network")
    route.get_by_label("Gateway").fill("192.0.2.1")
    route.get_by_role("button", name="Add the route").click()
    result["bad_route"] = refusal(route)
    page.screenshot(path=os.path.join(SHOTS, "network-refused.png"), full_page=True)

    # Nothing waits for confirmation: the API says so.
    answer = page.evaluate("""async () => {
        const s = await (await fetch('/api/v1/admin/session')).json();
        const r = await fetch('/api/v1/admin/network/confirm', {method: 'POST', headers: {'X-CSRF-Token': s.csrf_token}});
        return [r.status, (await r.json()).title]; }""")
    assert answer[0] == 409, answer
    result["confirm_nothing"] = answer
    settings = page.evaluate("async () => (await (await fetch('/api/v1/admin/settings')).json()).settings.network")
    assert settings["interfaces"] == [] and settings["routes"] == [], settings

    # DNS views: a bad one refused, one added (shown), then removed after confirming.
    dnsf = page.get_by_role("form", name="Add a DNS view")
    dnsf.get_by_label("View name").fill("inside")
    dnsf.get_by_label("Client networks").fill("not a network")
    dnsf.get_by_role("button", name="Add the view").click()
    result["bad_view"] = refusal(dnsf)
    dnsf.get_by_label("Client networks").fill("10.0.0.0/8, fd00::/8")
    dnsf.get_by_label("Records").fill("mail.example.org. 300 IN A 10.0.0.25\nmail.example.org. 300 IN AAAA fd00::25")
    dnsf.get_by_role("button", name="Add the view").click()
    expect(dnsf.get_by_text(re.compile("Saved"))).to_be_visible()
    views = page.get_by_role("region", name="DNS views")
    expect(views.locator("tbody tr").filter(has_text="inside")).to_contain_text("10.0.0.25")
    page.screenshot(path=os.path.join(SHOTS, "network.png"), full_page=True)
    page.get_by_role("button", name="Remove DNS view inside").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(page.get_by_text("No views: every name is forwarded.")).to_be_visible()
    assert not console_errors, console_errors

    # A read-only account sees the page, without forms.
    page.get_by_role("link", name="Administrators").click()
    new = page.get_by_role("form", name="New account")
    new.get_by_label("Username").fill("viewer")
    new.get_by_label("Role").select_option("read-only")
    new.get_by_label("Password").fill(PW)
    new.get_by_role("button", name="Create account").click()
    expect(new.get_by_text(re.compile("viewer .* created"))).to_be_visible()
    vctx = browser.new_context(viewport={"width": 1280, "height": 900})
    vp = vctx.new_page()
    vp.on("console", on_console)
    vp.goto(BASE + "/")
    vp.get_by_label("Username").fill("viewer")
    vp.get_by_label("Password").fill(PW)
    vp.get_by_role("button", name="Log in").click()
    vp.get_by_role("link", name="Network").click()
    expect(vp.get_by_role("heading", level=1)).to_have_text("Network")
    expect(vp.get_by_role("region", name="The kernel's links")).to_be_visible()
    expect(vp.get_by_role("form", name="Set an interface")).to_have_count(0)
    vctx.close()

    if AXE:
        actx = browser.new_context(bypass_csp=True, storage_state=ctx.storage_state(),
                                   viewport={"width": 1280, "height": 900})
        ap = actx.new_page()
        ap.goto(BASE + "/#/network")
        expect(ap.locator("main [data-page]")).to_have_attribute("data-page", "network")
        ap.wait_for_load_state("networkidle")
        ap.add_script_tag(content=open(AXE).read())
        found = ap.evaluate("""async () => (await axe.run(document,
            {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})).violations
            .map(v => ({id: v.id, help: v.help, targets: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))""")
        assert not found, json.dumps(found, indent=1)
        result["axe_network"] = "no violations"
        actx.close()
    assert not console_errors, console_errors
    browser.close()

print("RESULT " + json.dumps(result), flush=True)
