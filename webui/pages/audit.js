import { h, add, put, table, when, download } from "../dom.js";
import { api } from "../api.js";
import { form } from "../forms.js";

const LIMIT = 50;

export async function render(view) {
  let filter = {};
  let offset = 0;
  const out = h("div", {});
  let verify = "tail";
  const load = async () => {
    const q = new URLSearchParams({ ...filter, offset: String(offset), limit: String(LIMIT) });
    if (verify === "full") q.set("verify", "full");
    const page = await api("GET", `/audit?${q}`);
    const last = Math.min(page.offset + page.entries.length, page.total);
    const chain = page.chain.verified
      ? h("p", { class: "ok" }, `Audit chain verified (${page.chain.scope}, ${page.chain.entries} entries).`)
      : h("p", { class: "bad", role: "alert" }, `Audit chain NOT verified: ${page.chain.error || "unknown reason"}`);
    const prev = h("button", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - LIMIT); load().catch(show); } }, "Previous page");
    const next = h("button", { type: "button", disabled: last >= page.total, onclick: () => { offset += LIMIT; load().catch(show); } }, "Next page");
    put(out, chain,
      h("p", { role: "status" }, page.total ? `Entries ${page.offset + 1}–${last} of ${page.total}` : "No entries match."),
      table("Audit entries", [
        { label: "#", get: (e) => e.seq },
        { label: "Time", get: (e) => when(e.time) },
        { label: "Actor", get: (e) => e.actor },
        { label: "Action", get: (e) => e.action },
        { label: "Subject", get: (e) => e.subject },
        { label: "Detail", get: (e) => e.detail },
      ], page.entries, "No entries."),
      h("div", { class: "row" }, prev, next));
  };
  const show = (e) => put(out, h("p", { role: "alert" }, `${e.message}: ${(e.problem && e.problem.detail) || ""}`));
  const exportStatus = h("p", { role: "status" });
  const exportAll = async () => {
    put(exportStatus, "Exporting…");
    try {
      const entries = [];
      let total = 1;
      while (entries.length < total) {
        const q = new URLSearchParams({ ...filter, offset: String(entries.length), limit: "500" });
        const page = await api("GET", `/audit?${q}`);
        total = page.total;
        if (!page.entries.length) break;
        entries.push(...page.entries);
      }
      download(new Blob([JSON.stringify(entries, null, 1)], { type: "application/json" }), "sealgate-audit.json");
      put(exportStatus, `${entries.length} entries saved as sealgate-audit.json.`);
    } catch (e) { put(exportStatus, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
  };
  add(view, h("h1", {}, "Audit log"),
    form("Filter", [
      { name: "action", label: "Action starts with", hint: "e.g. admin.login, key." },
      { name: "actor", label: "Actor" },
      { name: "since", label: "Since", hint: "RFC 3339 time or Unix seconds" },
      { name: "until", label: "Until", hint: "RFC 3339 time or Unix seconds" },
    ], "Show", async (v) => {
      filter = v;
      offset = 0;
      await load();
    }),
    out,
    h("div", { class: "row" },
      h("button", { type: "button", onclick: exportAll }, "Export the matching entries (JSON)"),
      h("button", { type: "button", onclick: () => { verify = "full"; load().catch(show).finally(() => { verify = "tail"; }); } }, "Verify the whole chain now")),
    exportStatus);
  await load();
}
