# Per page of the web UI: how long until it is interactive and how many bytes it transfers,
# in Debian's headless Chromium (Playwright, executable_path). Measured, printed and written
# as JSON (MEASURE_OUT); nothing here asserts a time (a busy CI machine is not the box).
#  - cold: a fresh browser context per page (empty cache, the session cookie only): from
#    navigation to the page's own content (`main [data-page=NAME]`, drawn after its API
#    calls answered) and every byte transferred until the network is idle;
#  - in-app: moving to the page from another one inside the UI (modules cached, the way an
#    administrator moves around).
# Started by tests/docking/webui_measure.rs; prints RESULT {...}.
import json, os, re, sys, time
from playwright.sync_api import Browser, sync_playwright, expect

BASE = os.environ["BASE"]
SETUP = os.environ["SETUP"]
SPKI = os.environ["SPKI"]
CHROMIUM = os.environ["CHROMIUM"]
OUT = os.environ["MEASURE_OUT"]
PW = "correct horse battery staple"
PUBLIC = ["login", "claim"]
PAGES = ["dashboard", "keys", "certificates", "policies", "tokens", "audit", "queue",
         "settings", "tls", "network", "accounts", "system"]
# Waits are limits, not timings: beside the QEMU suite a step can take tens of seconds.
PATIENCE_MS = 90_000
expect.set_options(timeout=PATIENCE_MS)
_new_context = Browser.new_context
Browser.new_context = lambda self, **kw: _patient(_new_context(self, **kw))
def _patient(ctx):
    ctx.set_default_timeout(PATIENCE_MS)
    return ctx


def measure(browser, name, state):
    ctx = browser.new_context(storage_state=state, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    got = {"bytes": 0, "requests": 0}

    def finished(ev):
        got["bytes"] += int(ev.get("encodedDataLength", 0))
        got["requests"] += 1
    cdp.on("Network.loadingFinished", finished)
    t0 = time.monotonic()
    page.goto(BASE + "/#/" + name)
    page.locator(f'main [data-page="{name}"]').wait_for()
    ms = (time.monotonic() - t0) * 1000
    page.wait_for_load_state("networkidle")
    nav = page.evaluate("""() => { const n = performance.getEntriesByType('navigation')[0];
        return n ? Math.round(n.domInteractive) : null; }""")
    ctx.close()
    return {"interactive_ms": round(ms), "dom_interactive_ms": nav, "bytes": got["bytes"], "requests": got["requests"]}


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=[f"--ignore-certificate-errors-spki-list={SPKI}"])
    cold = {}
    # The first page a new visitor gets (the login), before anything is cached.
    cold["login"] = measure(browser, "login", None)
    cold["claim"] = measure(browser, "claim", None)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(BASE + "/#/claim")
    page.get_by_label("Setup token").fill(SETUP)
    page.get_by_label("Administrator's username").fill("root")
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_label("Password again").fill(PW)
    page.get_by_role("button", name="Create the administrator").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    state = ctx.storage_state()
    for name in PAGES:
        cold[name] = measure(browser, name, state)
    warm = {}
    order = PAGES[1:] + PAGES[:1]
    for name in order:
        t0 = time.monotonic()
        page.evaluate("(n) => { location.hash = '#/' + n; }", name)
        page.locator(f'main [data-page="{name}"]').wait_for()
        warm[name] = round((time.monotonic() - t0) * 1000)
    browser.close()

rows = [f"{'page':<14}{'cold ms':>9}{'domInteractive':>16}{'bytes':>9}{'requests':>10}{'in-app ms':>11}"]
for name, m in cold.items():
    rows.append(f"{name:<14}{m['interactive_ms']:>9}{str(m['dom_interactive_ms']):>16}{m['bytes']:>9}{m['requests']:>10}{str(warm.get(name, '-')):>11}")
print("\n".join(rows), flush=True)
report = {"cold": cold, "in_app_ms": warm,
          "note": "interactive = the page's content drawn after its API answers; bytes = encoded bytes on the wire, cache disabled"}
with open(OUT, "w") as f:
    json.dump(report, f, indent=1)
print("RESULT " + json.dumps(report), flush=True)
