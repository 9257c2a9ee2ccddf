import { h, add, put, facts, table, when, download } from "../dom.js";
import { api } from "../api.js";

function uptime(s) {
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return `${d ? `${d} d ` : ""}${hh} h ${m} min`;
}

function supportCard() {
  const st = h("p", { role: "status" });
  const get = async () => {
    put(st, "Collecting…");
    try {
      const r = await api("GET", "/support-bundle", undefined, { raw: true, accept: "application/gzip" });
      download(await r.blob(), "sealgate-support.tar.gz");
      put(st, "sealgate-support.tar.gz saved: recent logs, status and settings, no keys or tokens.");
    } catch (e) { put(st, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
  };
  return h("section", { class: "card" }, h("h2", {}, "Support"),
    h("button", { type: "button", onclick: get }, "Download a support bundle"), st);
}

const SOON_DAYS = 30;

/** Certificates that end within SOON_DAYS days (or have ended): the box's keys, its CA, the
 * external certificates it encrypts to and the TLS certificate its listeners serve. */
function expiries(keys, ca, certs, tls) {
  const now = Date.now();
  const out = [];
  const add1 = (what, name, t) => {
    const end = typeof t === "number" ? t * 1000 : Date.parse(t);
    if (isNaN(end)) return;
    const days = Math.floor((end - now) / 86400000);
    if (days <= SOON_DAYS) out.push({ what, name, t, days });
  };
  for (const k of keys || []) if (k.status === "active") add1(`key #${k.id} (${k.purpose})`, k.user, k.not_after);
  if (ca && ca.state === "active" && ca.not_after) add1("the box's CA", ca.subject || "CA", ca.not_after);
  for (const c of certs || []) add1("external certificate", c.emails.join(", "), c.not_after);
  if (tls && tls.not_after) add1("the box's TLS certificate", tls.names.join(", ") || tls.subject, tls.not_after);
  return out.sort((a, b) => a.days - b.days);
}

const KINDS = ["signed", "encrypted", "decrypted", "verified", "refused"];

/** Messages in the last hour and the last 24 hours, and the hours that had any. */
function messagesCard(hours) {
  const sum = (hs, k) => hs.reduce((n, x) => n + (x[k] || 0), 0);
  const last = hours.slice(-1);
  const busy = hours.filter((x) => KINDS.some((k) => x[k])).reverse();
  return h("div", { class: "card", id: "messages" }, h("h2", {}, "Messages"),
    table("Messages in the last hour and day", [
      { label: "Messages", get: (k) => k },
      { label: "This hour", get: (k) => String(sum(last, k)) },
      { label: "24 hours", get: (k) => String(sum(hours, k)) },
    ], KINDS),
    busy.length ? h("details", {}, h("summary", {}, "Per hour"), table("Messages per hour", [
      { label: "Hour (UTC)", get: (x) => when(x.start).replace(/:00 UTC$/, " UTC") },
      ...KINDS.map((k) => ({ label: k, get: (x) => String(x[k] || 0) })),
    ], busy)) : h("p", { class: "hint" }, "Counted since the daemon started."));
}

export async function render(view, { session }) {
  const [st, keys, ca, certs, tls] = await Promise.all([
    api("GET", "/status"),
    api("GET", "/keys").catch(() => null),
    api("GET", "/ca").catch(() => null),
    api("GET", "/certificates").catch(() => null),
    api("GET", "/tls").catch(() => null),
  ]);
  const q = st.queue || {};
  const soon = expiries(keys, ca, certs, tls);
  add(view, h("h1", {}, "Dashboard"),
    h("section", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "The box"), facts([
        ["Health", st.vault.sealer === "tpm" ? h("span", { class: "ok" }, "up") : h("span", { class: "bad" }, "up, keys not sealed by a TPM")],
        ["Version", st.version],
        ["Slot", st.slot || "– (not booted from a slot)"],
        ["Up for", uptime(st.uptime_secs)],
        ["Setup token pending", st.setup_pending ? "yes" : "no"],
      ])),
      h("div", { class: "card" }, h("h2", {}, "Vault and TPM"), facts([
        ["Key sealing", st.vault.sealer === "tpm" ? "TPM" : "software (not for production)"],
        ["TPM device", st.tpm && st.tpm.present ? "present" : "not present"],
        ["Keys in the vault", st.vault.keys],
        ["Administrators", st.accounts],
        ["Sessions", st.sessions],
      ])),
      messagesCard(st.messages || []),
      h("div", { class: "card", id: "queue-counts" }, h("h2", {}, "Mail queue"),
        facts(["queued", "deferred", "held", "bounced"].map((s) => [s, q[s] || 0])),
        h("p", {}, h("a", { href: "#/queue" }, "The queue")))),
    h("section", { class: "card", id: "expiries" }, h("h2", {}, `Certificates ending within ${SOON_DAYS} days`),
      keys === null ? h("p", {}, "Not available for this role.") : table("Certificates ending soon", [
        { label: "What", get: (x) => x.what },
        { label: "Of", get: (x) => x.name },
        { label: "Valid until", get: (x) => when(x.t) },
        { label: "Days left", get: (x) => h("span", { class: x.days < 0 ? "bad" : x.days < 7 ? "bad" : "" }, x.days < 0 ? "ended" : String(x.days)) },
      ], soon, `Nothing ends within ${SOON_DAYS} days.`)),
    session.role !== "read-only" ? supportCard() : null,
    h("section", { class: "card" }, h("h2", {}, "Listeners"),
      table("Listeners", [
        { label: "Name", get: (l) => l.name },
        { label: "Address", get: (l) => l.address },
      ], st.listeners)));
}
