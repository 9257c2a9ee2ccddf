# The web UI's network page against a daemon that manages the network of its own namespace
# (Chromium runs in the same namespace): a change that removes an address shows the
# confirm-or-revert countdown; "Keep this change" keeps it; a second such change is left to
# run out, the page says so and shows the previous address back.
# Started by tests/network/webui.rs; prints RESULT {...}.
import json, os, re, time
from playwright.sync_api import Browser, sync_playwright, expect

BASE = os.environ["BASE"]
SETUP = os.environ["SETUP"]
SPKI = os.environ["SPKI"]
CHROMIUM = os.environ["CHROMIUM"]
SHOTS = os.environ["SHOTS"]
PW = "correct horse battery staple"
# Waits are limits, not timings: beside the QEMU suite a step can take tens of seconds.
PATIENCE_MS = 90_000
expect.set_options(timeout=PATIENCE_MS)
_new_context = Browser.new_context
Browser.new_context = lambda self, **kw: _patient(_new_context(self, **kw))
def _patient(ctx):
    ctx.set_default_timeout(PATIENCE_MS)
    return ctx
result = {}
errors = []

def run(page):
    page.goto(BASE + "/#/claim")
    page.get_by_label("Setup token").fill(SETUP)
    page.get_by_label("Administrator's username").fill("root")
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_label("Password again").fill(PW)
    page.get_by_role("button", name="Create the administrator").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    page.get_by_role("link", name="Network").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Network")
    links = page.get_by_role("region", name="The kernel's links")
    eth0 = links.locator("tbody tr").filter(has=page.get_by_role("cell", name="eth0", exact=True))
    expect(eth0).to_contain_text("192.0.2.10/24")
    expect(eth0.get_by_role("cell", name="yes", exact=True)).to_have_count(1)
    expect(page.locator("#not-managed")).to_have_count(0)
    expect(page.locator("#network-confirm")).to_have_count(0)

    def set_eth0(address):
        f = page.get_by_role("form", name="Set an interface")
        f.get_by_label("Link name").fill("eth0")
        f.get_by_label("Addresses").fill(address)
        f.get_by_label("MTU").fill("1400")
        f.get_by_role("button", name="Set the interface").click()
        expect(f.get_by_text(re.compile(r"Saved\. Confirm within \d+ s"))).to_be_visible()

    # Removing 192.0.2.10: the countdown; kept.
    set_eth0("192.0.2.20/24")
    card = page.locator("#network-confirm")
    expect(card).to_be_visible()
    first = int(page.locator("#confirm-left").inner_text())
    time.sleep(2.5)
    later = int(page.locator("#confirm-left").inner_text())
    assert 0 < later < first, (first, later)
    result["countdown"] = [first, later]
    page.screenshot(path=os.path.join(SHOTS, "network-confirm.png"), full_page=True)
    card.get_by_role("button", name="Keep this change").click()
    expect(card.get_by_text("Kept.")).to_be_visible()
    expect(page.locator("#network-confirm")).to_have_count(0)
    expect(eth0).to_contain_text("192.0.2.20/24")

    # Removing 192.0.2.20 and not keeping it: time runs out, the previous address is back.
    set_eth0("192.0.2.30/24")
    expect(page.locator("#network-confirm")).to_be_visible()
    expect(eth0).to_contain_text("192.0.2.30/24")
    expect(page.get_by_text("Time ran out: the previous network settings are back.")).to_be_visible(timeout=2 * PATIENCE_MS)
    expect(page.locator("#network-confirm")).to_have_count(0)
    expect(eth0).to_contain_text("192.0.2.20/24")
    expect(eth0).not_to_contain_text("192.0.2.30")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=[f"--ignore-certificate-errors-spki-list={SPKI}"])
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    # What the page saw, printed if a step fails (a wait that runs out says only what it
    # waited for).
    seen = []
    page.on("console", lambda m: seen.append(f"console {m.type}: {m.text}"))
    page.on("requestfailed", lambda r: seen.append(f"request failed: {r.method} {r.url}: {r.failure}"))
    page.on("response", lambda r: seen.append(f"{r.status} {r.request.method} {r.url}"))
    try:
        run(page)
    except Exception:
        print("the page's requests and messages:\n  " + "\n  ".join(seen[-60:]), flush=True)
        try:
            print("the page's text:\n" + page.locator("body").inner_text(timeout=5000), flush=True)
            page.screenshot(path=os.path.join(SHOTS, "network-failed.png"), full_page=True)
        except Exception as e:
            print(f"(no text or screenshot: {e})", flush=True)
        raise
    assert not errors, errors
    browser.close()

print("RESULT " + json.dumps(result), flush=True)
