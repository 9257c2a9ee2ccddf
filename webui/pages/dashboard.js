import { h, add, put, facts, table, download } from "../dom.js";
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

export async function render(view, { session }) {
  const [st, q] = await Promise.all([
    api("GET", "/status"),
    api("GET", "/queue").catch(() => null),
  ]);
  const counts = {};
  for (const m of q ? q.messages : []) counts[m.state] = (counts[m.state] || 0) + 1;
  add(view, h("h1", {}, "Dashboard"),
    h("section", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "The box"), facts([
        ["Version", st.version],
        ["Up for", uptime(st.uptime_secs)],
        ["Key sealing", st.vault.sealer === "tpm" ? "TPM" : "software (not for production)"],
        ["Keys in the vault", st.vault.keys],
        ["Administrators", st.accounts],
        ["Sessions", st.sessions],
        ["Setup token pending", st.setup_pending ? "yes" : "no"],
      ])),
      h("div", { class: "card" }, h("h2", {}, "Mail queue"), q
        ? facts(["queued", "deferred", "held", "bounced"].map((s) => [s, counts[s] || 0]))
        : h("p", {}, "Not available for this role or without SMTP listeners."))),
    session.role !== "read-only" ? supportCard() : null,
    h("section", { class: "card" }, h("h2", {}, "Listeners"),
      table("Listeners", [
        { label: "Name", get: (l) => l.name },
        { label: "Address", get: (l) => l.address },
      ], st.listeners)));
}
