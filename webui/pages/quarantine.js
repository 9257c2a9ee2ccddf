// The quarantine (auditor and admin only; the API refuses everyone else): the index, one
// message's verdict and content, release (as it came, or as the policy would send it) and
// delete with a reason. The message is shown as text only: header fields and text parts as
// text nodes (HTML parts arrive from the server with their markup removed), attachments by
// name, type and size; nothing of it is ever parsed as HTML or fetched.

import { h, add, put, table, facts, when, confirmAction } from "../dom.js";
import { api } from "../api.js";
import { form } from "../forms.js";

const enc = encodeURIComponent;

function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function problemText(e) {
  return `${e.message}${e.problem && e.problem.detail ? `: ${e.problem.detail}` : ""}`;
}

export async function render(view) {
  const status = h("p", { role: "status" });
  const list = h("div", {});
  const detail = h("section", { "aria-label": "The selected message" });

  const load = async () => {
    const l = await api("GET", "/quarantine");
    const rows = l.messages.slice().reverse();
    put(list, table("Quarantined messages", [
      { label: "Time", get: (m) => when(m.time) },
      { label: "Direction", get: (m) => m.direction },
      { label: "From", get: (m) => m.from || "<>" },
      { label: "Recipients", get: (m) => m.to.join(", ") },
      { label: "Action", get: (m) => h("span", { class: "badge held" }, m.action) },
      { label: "Labels", get: (m) => m.labels.join(", ") || "–" },
      { label: "Score", get: (m) => String(m.score) },
      { label: "Message", get: (m) => h("button", { type: "button", onclick: () => show(m.id), "aria-label": `View ${m.id} from ${m.from || "<>"}` }, "View") },
    ], rows, "Nothing is in the quarantine."),
    l.unreadable.length ? h("p", { class: "bad" }, `Entries that do not decrypt (another vault key, or altered): ${l.unreadable.join(", ")}`) : null);
  };

  const done = async (text) => {
    put(detail);
    put(status, text);
    await load();
    status.focus();
  };

  const show = async (id) => {
    put(detail, h("p", { "aria-busy": "true" }, "Loading…"));
    let m;
    try {
      m = await api("GET", `/quarantine/${enc(id)}`);
    } catch (e) {
      put(detail, h("p", { role: "alert", class: "bad" }, problemText(e)));
      return;
    }
    const v = m.view;
    const outbound = m.direction === "outbound";
    const mode = h("select", { id: "q-as", name: "as" },
      h("option", { value: "received", selected: !outbound }, outbound ? "As it came (cleartext, not signed or encrypted)" : "As it came"),
      h("option", { value: "policy", selected: outbound }, outbound ? "As the policy would send it (signed and encrypted now)" : "As the policy would send it (with its scan verdict; encrypted at rest if that is on)"));
    const release = form("Release", [
      { name: "reason", label: "Reason" },
      h("div", { class: "field", "data-field": "as" }, h("label", { for: "q-as" }, "Send it"), mode,
        h("p", { class: "field-error", "aria-live": "polite" })),
    ], "Release to its recipients", async (vals) => {
      const body = { as: vals.as };
      if (vals.reason) body.reason = vals.reason;
      const r = await api("POST", `/quarantine/${enc(id)}/release`, body);
      await done(`${id}: released to ${r.recipients.join(", ")} (queued as ${r.queued_as.join(", ")}).`);
    });
    const del = form("Delete", [
      { name: "reason", label: "Reason", required: true, hint: "Required; kept in the audit log." },
    ], "Delete", async (vals) => {
      if (!(await confirmAction(`Delete ${id}? It is not delivered and the sender is not told.`, "Delete"))) return "";
      await api("POST", `/quarantine/${enc(id)}/delete`, { reason: vals.reason || "" });
      await done(`${id}: deleted.`);
      return "";
    }, { danger: true });
    put(detail,
      h("div", { class: "card" },
        h("h2", { id: "q-detail", tabindex: "-1" }, `Message ${m.id}`),
        facts([
          ["Time", when(m.time)],
          ["Direction", m.direction],
          ["From", m.from || "<>"],
          ["Recipients", m.to.join(", ")],
          ["Client", m.client || "–"],
          ["Action", m.action],
          ["Score", String(m.score)],
          ["Labels", m.labels.join(", ") || "–"],
          ["Verdict", m.reason || "–"],
          ["Size", size(m.size)],
          ["Content", m.decrypted ? "encrypted; decrypted for you (the stored copy stays encrypted)" : m.encrypted ? "encrypted: no key of the recipients decrypts it (outer header fields only)" : "cleartext, as received"],
        ])),
      h("div", { class: "card" }, h("h3", {}, "Header fields"),
        table("Header fields", [
          { label: "Field", get: (f) => f[0] },
          { label: "Value", get: (f) => f[1] },
        ], v.headers, "No header fields.")),
      h("div", { class: "card" }, h("h3", {}, "Text"),
        v.texts.length ? v.texts.map((t) => h("figure", { class: "mailtext" },
          h("figcaption", {}, `Part ${t.path || "1"}${t.html ? " (HTML, shown as text without its markup)" : ""}${t.truncated ? " (cut short)" : ""}`),
          h("pre", { tabindex: "0", "aria-label": `Text of part ${t.path || "1"}` }, t.text))) : h("p", { class: "empty" }, "No text parts.")),
      h("div", { class: "card" }, h("h3", {}, "Attachments"),
        table("Attachments", [
          { label: "Name", get: (a) => a.name || "(no name)" },
          { label: "Type", get: (a) => a.content_type || "–" },
          { label: "Size", get: (a) => size(a.size) },
          { label: "Part", get: (a) => a.path },
        ], v.attachments, "No attachments.")),
      h("div", { class: "grid" }, release, del));
    const hd = detail.querySelector("#q-detail");
    if (hd) hd.focus();
  };

  const digest = async () => {
    try {
      const r = await api("POST", "/quarantine/digest");
      put(status, `Digest mails queued: ${r.queued}.`);
    } catch (e) { put(status, problemText(e)); }
  };

  status.setAttribute("tabindex", "-1");
  await load();
  add(view, h("h1", {}, "Quarantine"),
    h("p", {}, "Messages content scanning held back. Reading one is recorded in the audit log."),
    status,
    h("section", { class: "card", "aria-label": "The quarantine index" },
      h("div", { class: "row" },
        h("button", { type: "button", onclick: () => load().catch((e) => put(status, problemText(e))) }, "Refresh"),
        h("button", { type: "button", onclick: digest }, "Send the digest mails now")),
      list),
    detail);
}
