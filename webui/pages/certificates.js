import { h, add, put, table, when, facts, confirmAction } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

const problemText = (e) => `${e.message}${e.problem && e.problem.detail ? `: ${e.problem.detail}` : ""}`;
const short = (fp) => h("code", { title: fp }, `${fp.slice(0, 16)}…`);

export async function render(view) {
  const stored = h("div", {});
  const pending = h("div", {});
  const status = h("p", { role: "status" });
  const act = async (question, label, fn) => {
    if (question && !(await confirmAction(question, label))) return;
    try { const said = await fn(); await refresh(); put(status, said); } catch (e) { put(status, problemText(e)); }
  };
  const refresh = async () => {
    const [certs, waiting] = await Promise.all([api("GET", "/certificates"), api("GET", "/certificates/pending")]);
    put(stored, table("Stored certificates", [
      { label: "Addresses", get: (c) => c.emails.join(", ") },
      { label: "Subject", get: (c) => c.subject },
      { label: "Issuer", get: (c) => c.issuer },
      { label: "Valid until", get: (c) => when(c.not_after) },
      { label: "SHA-256", get: (c) => short(c.sha256) },
      { label: "Actions", get: (c) => (isAdmin() ? h("button", { type: "button", class: "danger", "aria-label": `Delete the certificate of ${c.emails.join(", ")}`,
        onclick: () => act(`Delete the certificate of ${c.emails.join(", ")}? Mail to them is no longer encrypted with it.`, "Delete", async () => {
          await api("DELETE", `/certificates/${c.sha256}`);
          return "Certificate deleted.";
        }) }, "Delete") : "") },
    ], certs, "No external certificates stored."));
    put(pending, table("Certificates waiting for a decision", [
      { label: "Addresses", get: (c) => c.emails.join(", ") },
      { label: "Subject", get: (c) => c.subject },
      { label: "Why it waits", get: (c) => c.reason },
      { label: "Sent by", get: (c) => c.requested_by },
      { label: "SHA-256", get: (c) => short(c.sha256) },
      { label: "Actions", get: (c) => (isAdmin() ? h("div", { class: "row" },
        h("button", { type: "button", "aria-label": `Approve the certificate of ${c.emails.join(", ")}`, onclick: () => act(null, null, async () => {
          await api("POST", `/certificates/pending/${c.sha256}/approve`);
          return "Approved: encrypt uses it now.";
        }) }, "Approve"),
        h("button", { type: "button", class: "danger", "aria-label": `Reject the certificate of ${c.emails.join(", ")}`,
          onclick: () => act(`Reject the certificate of ${c.emails.join(", ")}?`, "Reject", async () => {
            await api("POST", `/certificates/pending/${c.sha256}/reject`);
            return "Rejected.";
          }) }, "Reject")) : "") },
    ], waiting, "Nothing waits."));
  };
  const blockedList = h("div", { id: "blocked" });
  const refreshBlocked = async () => {
    const rows = await api("GET", "/directory/blocked");
    put(blockedList, table("Blocked certificates", [
      { label: "SHA-256", get: (b) => short(b.sha256) },
      { label: "Why", get: (b) => b.reason || "–" },
      { label: "By", get: (b) => b.by },
      { label: "When", get: (b) => when(b.at) },
      { label: "Actions", get: (b) => (isAdmin() ? h("button", { type: "button", "aria-label": `Unblock ${b.sha256.slice(0, 16)}`,
        onclick: () => act(null, null, async () => {
          await api("DELETE", `/directory/blocked/${b.sha256}`);
          await refreshBlocked();
          return "Unblocked: the certificate may be used again.";
        }) }, "Unblock") : "") },
    ], rows, "No certificate is blocked."));
  };
  const block = async (sha256, reason) => {
    await api("POST", "/directory/blocked", { sha256, reason });
    await refreshBlocked();
    return "Blocked: it is never used to encrypt, whatever the source.";
  };
  await Promise.all([refresh(), refreshBlocked()]);
  const found = h("div", { id: "lookup-result", "aria-live": "polite" });
  const tester = form("Look up a certificate", [
    { name: "address", label: "Email address", type: "email", required: true, autocomplete: "off",
      hint: "Which certificate the box would encrypt to, from which source, and why others were refused. The lookup is audited." },
  ], "Look up", async (v) => {
    put(found);
    const r = await api("GET", `/directory/lookup?address=${encodeURIComponent(v.address || "")}`);
    const d = r.details;
    put(found, h("section", { class: "card", "aria-label": `Lookup of ${r.address}` },
      h("h2", {}, `Lookup of ${r.address}`),
      h("p", { class: r.certificate ? "ok" : "bad" }, r.certificate
        ? `Valid: found by the source ${r.source}.`
        : "No valid certificate: mail to this address cannot be encrypted."),
      d ? facts([
        ["Source", r.source],
        ["Subject", d.subject],
        ["Issuer", d.issuer],
        ["Addresses", d.emails.join(", ")],
        ["Valid from", when(d.not_before)],
        ["Valid until", when(d.not_after)],
        ["SHA-256", h("code", {}, d.sha256)],
      ]) : null,
      d && isAdmin() ? h("button", { type: "button", class: "danger", onclick: () => act(
        `Block the certificate of ${r.address}? It is never used to encrypt again, whatever the source, until it is unblocked.`,
        "Block", () => block(d.sha256, `from the lookup of ${r.address}`)) }, "Block this certificate") : null,
      r.refused.length ? table("Refused candidates", [
        { label: "Source", get: (x) => x.source },
        { label: "Why", get: (x) => x.reason },
      ], r.refused) : h("p", { class: "empty" }, "No candidate was refused.")));
    return "";
  });
  add(view, h("h1", {}, "Certificates"),
    h("p", {}, "External recipients' certificates: mail to these addresses is encrypted with them."), status,
    h("section", { class: "card" }, h("h2", {}, "Waiting for a decision"), pending),
    h("section", { class: "card" }, h("h2", {}, "Stored"), stored),
    tester, found,
    h("section", { class: "card" }, h("h2", {}, "Blocked"),
      h("p", {}, "Certificates never used to encrypt, whatever the source says."), blockedList),
    isAdmin() ? form("Block a certificate", [
      { name: "sha256", label: "SHA-256 fingerprint", required: true, hint: "64 hex digits (colons allowed)." },
      { name: "reason", label: "Why" },
    ], "Block", (v) => block(v.sha256 || "", v.reason || ""), { danger: true, reset: true }) : null,
    isAdmin() ? form("Add certificates", [
      { name: "file", label: "Certificate file (PEM or DER)", type: "file", accept: ".pem,.crt,.cer,.der" },
      { name: "pem", label: "Or paste PEM", type: "textarea" },
    ], "Add", async (v) => {
      let certificate = v.pem || "";
      if (v.file) {
        const buf = new Uint8Array(await v.file.arrayBuffer());
        const text = new TextDecoder().decode(buf);
        certificate = text.includes("-----BEGIN") ? text : btoa(String.fromCharCode(...buf));
      }
      const added = await api("POST", "/certificates", { certificate });
      await refresh();
      return `Stored for ${added.flatMap((c) => c.emails).join(", ")}.`;
    }) : null);
}
