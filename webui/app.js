// The shell: a hash router (#/page) that loads one module per page from /ui/pages/, the
// navigation, and the session check before every page that needs one.

import { h, put } from "./dom.js";
import { api, currentSession, setSession, ApiError } from "./api.js";

const PAGES = [
  { path: "dashboard", label: "Dashboard" },
  { path: "keys", label: "Users and keys" },
  { path: "certificates", label: "Certificates" },
  { path: "policies", label: "Policies" },
  { path: "tokens", label: "API tokens" },
  { path: "audit", label: "Audit log" },
  { path: "queue", label: "Queue" },
  { path: "quarantine", label: "Quarantine", roles: ["admin", "auditor"] },
  { path: "settings", label: "Settings" },
  { path: "tls", label: "TLS certificate" },
  { path: "network", label: "Network" },
  { path: "accounts", label: "Administrators" },
  { path: "system", label: "System" },
];
const PUBLIC = ["login", "claim"];
const main = document.getElementById("main");

function current() {
  const m = location.hash.match(/^#\/([a-z-]+)/);
  return m ? m[1] : "dashboard";
}

export function go(path) {
  if (current() === path && location.hash) route();
  else location.hash = `#/${path}`;
}

async function logout() {
  try { await api("DELETE", "/session"); } catch { /* the session may be gone already */ }
  setSession(null);
  go("login");
}

// The pages this account's role may open (the API refuses the others anyway).
function mine(session) {
  return PAGES.filter((p) => !p.roles || (session && p.roles.includes(session.role)));
}

function drawNav(session, page) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session) { put(nav); put(who); return; }
  put(nav, h("ul", {}, mine(session).map((p) => h("li", {},
    h("a", { href: `#/${p.path}`, "aria-current": p.path === page ? "page" : false }, p.label)))));
  put(who, `${session.username} (${session.role}) `,
    h("button", { type: "button", class: "link", onclick: logout }, "Log out"));
}

async function route() {
  const page = current();
  let session = null;
  try {
    session = await currentSession(true);
  } catch (e) {
    put(main, h("p", { role: "alert" }, e.message));
    return;
  }
  const known = PUBLIC.includes(page) || mine(session).some((p) => p.path === page);
  if (!known) { go(session ? "dashboard" : "login"); return; }
  if (!session && !PUBLIC.includes(page)) { go("login"); return; }
  if (session && PUBLIC.includes(page)) { go("dashboard"); return; }
  drawNav(session, page);
  document.title = `${(PAGES.find((p) => p.path === page) || { label: page[0].toUpperCase() + page.slice(1) }).label} · Sealgate`;
  put(main, h("p", { "aria-busy": "true" }, "Loading…"));
  try {
    const mod = await import(`./pages/${page}.js`);
    const view = h("div", { class: "page", "data-page": page });
    await mod.render(view, { session, go });
    if (flash && page === "login") view.prepend(h("p", { class: "bad", role: "alert" }, flash));
    flash = null;
    put(main, view);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { setSession(null); go("login"); return; }
    put(main, h("div", { class: "card" }, h("h1", {}, "This page could not be shown"),
      h("p", { role: "alert" }, e instanceof ApiError ? `${e.problem.title}: ${e.problem.detail || ""}` : String(e))));
  }
  const h1 = main.querySelector("h1");
  if (h1) { h1.setAttribute("tabindex", "-1"); h1.focus(); }
}

let flash = null;
window.addEventListener("sealgate:session-ended", () => {
  flash = "Your session has ended: log in again.";
  go("login");
});

window.addEventListener("hashchange", route);
route();
