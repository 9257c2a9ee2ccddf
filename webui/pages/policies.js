// Policies: the [policy] settings (global levels, per-domain and per-user overrides),
// changed through PATCH /settings like every setting: the server validates, the page shows
// its problem+json. A user's entry beats their domain's, a domain's beats the global one.

import { h, add, put, table, confirmAction } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

const ENCRYPT = ["never", "if-possible", "mandatory"];
const SIGN = ["never", "if-possible", "always"];
const INHERIT = "(inherit)";
const problemText = (e) => `${e.message}${e.problem && e.problem.detail ? `: ${e.problem.detail}` : ""}`;

function outcomeText(r) {
  const o = (r && r.outcome) || {};
  if (!o.changed || !o.changed.length) return "Nothing changed.";
  const later = o.changed.filter((c) => !(o.applied || []).includes(c));
  return `Saved: ${o.changed.join(", ")}.${later.length ? " It applies after a restart of the daemon (System page)." : ""}`;
}

export async function render(view) {
  const status = h("p", { role: "status", id: "policy-status" });
  const slot = h("div", {});
  const admin = isAdmin();
  const patch = async (p) => {
    const r = await api("PATCH", "/settings", { policy: p });
    // Redrawn first, then said: "Saved" means the page shows it (a redraw arriving after the
    // status would wipe what was typed into the other form meanwhile).
    await draw();
    put(status, outcomeText(r));
    return outcomeText(r);
  };
  const draw = async () => {
    const s = await api("GET", "/settings");
    const p = s.settings.policy;
    const pending = (s.restart_required || []).filter((f) => f.startsWith("policy."));
    const rows = [
      ...Object.entries(p.domains || {}).map(([name, o]) => ({ kind: "domain", name, o })),
      ...Object.entries(p.users || {}).map(([name, o]) => ({ kind: "user", name, o })),
    ];
    const level = (v) => (v === null || v === undefined ? h("span", { class: "hint" }, "inherit") : String(v));
    put(slot,
      pending.length ? h("p", { class: "card warn" }, `Saved, waiting for a restart: ${pending.join(", ")}. `,
        h("a", { href: "#/system" }, "Restart on the System page"), ".") : null,
      admin ? form("Global policy", [
        { name: "policy.encrypt", label: "Encrypt", type: "select", options: ENCRYPT, value: p.encrypt,
          hint: "never; if-possible (when every recipient has a certificate); mandatory (refuse otherwise)." },
        { name: "policy.sign", label: "Sign", type: "select", options: SIGN, value: p.sign },
        { name: "policy.subject_trigger", label: "Subject trigger", value: p.subject_trigger || "", plain: true,
          hint: "A sender who puts this in the subject asks for encryption (it is removed). Empty: the default." },
        { name: "policy.auto_enrol", label: "Issue keys to new senders automatically", type: "select", options: ["true", "false"], value: String(p.auto_enrol) },
        { name: "policy.header_protection", label: "Protect headers (RFC 9788)", type: "select", options: ["true", "false"], value: String(p.header_protection) },
      ], "Save the global policy", async (v) => {
        const change = {};
        if (v["policy.encrypt"] !== p.encrypt) change.encrypt = v["policy.encrypt"];
        if (v["policy.sign"] !== p.sign) change.sign = v["policy.sign"];
        const trig = v["policy.subject_trigger"] || "";
        if (trig !== (p.subject_trigger || "")) change.subject_trigger = trig === "" ? null : trig;
        for (const b of ["auto_enrol", "header_protection"]) {
          if (v[`policy.${b}`] !== String(p[b])) change[b] = v[`policy.${b}`] === "true";
        }
        if (!Object.keys(change).length) return "Nothing changed.";
        return patch(change);
      }) : h("section", { class: "card" }, h("h2", {}, "Global policy"), h("dl", { class: "facts" },
        [["Encrypt", p.encrypt], ["Sign", p.sign], ["Subject trigger", p.subject_trigger || "–"],
          ["Issue keys automatically", String(p.auto_enrol)], ["Protect headers", String(p.header_protection)]]
          .map(([k, val]) => [h("dt", {}, k), h("dd", {}, val)]))),
      h("section", { class: "card", id: "overrides" }, h("h2", {}, "Domains and users"),
        h("p", {}, "A user's entry beats their domain's; a domain's beats the global policy. Empty levels inherit."),
        table("Policy overrides", [
          { label: "Kind", get: (r) => r.kind },
          { label: "Name", get: (r) => r.name },
          { label: "Encrypt", get: (r) => level(r.o.encrypt) },
          { label: "Sign", get: (r) => level(r.o.sign) },
          { label: "Actions", get: (r) => (admin ? h("button", { type: "button", class: "danger", "aria-label": `Remove the policy of ${r.name}`,
            onclick: async () => {
              if (!(await confirmAction(`Remove the policy of ${r.name}? The ${r.kind === "user" ? "domain's or " : ""}global policy applies to it then.`, "Remove"))) return;
              try { await patch({ [r.kind === "user" ? "users" : "domains"]: { [r.name]: null } }); } catch (e) { put(status, problemText(e)); }
            } }, "Remove") : "") },
        ], rows, "No domain or user has its own policy.")),
      admin ? form("Set a domain's or user's policy", [
        { name: "kind", label: "For", type: "select", options: ["domain", "user"], value: "domain" },
        { name: "name", label: "Domain or address", required: true, hint: "example.org, or alice@example.org for a user." },
        { name: "encrypt", label: "Encrypt", type: "select", options: [INHERIT, ...ENCRYPT], value: INHERIT },
        { name: "sign", label: "Sign", type: "select", options: [INHERIT, ...SIGN], value: INHERIT },
      ], "Set the policy", async (v) => {
        const name = (v.name || "").trim().toLowerCase();
        const entry = {
          encrypt: v.encrypt === INHERIT ? null : v.encrypt,
          sign: v.sign === INHERIT ? null : v.sign,
        };
        try {
          return await patch({ [v.kind === "user" ? "users" : "domains"]: { [name]: entry } });
        } catch (e) {
          // The server names the entry (policy.domains.NAME): that is this form's name field.
          if (e.problem && /^policy\.(domains|users)\./.test(e.problem.field || "") && !/\.(encrypt|sign)$/.test(e.problem.field)) e.problem.field = "name";
          throw e;
        }
      }) : null);
  };
  await draw();
  add(view, h("h1", {}, "Policies"),
    h("p", {}, "When the box encrypts and signs outgoing mail: the ", h("code", {}, "[policy]"), " settings."),
    status, slot);
}
