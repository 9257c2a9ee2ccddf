import { h, add, put, table, when, confirmAction } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

function shownOnce(name, token) {
  return h("div", { class: "once" },
    h("p", {}, `The token for ${name}. It is shown only now: copy it to where it is used.`),
    h("code", { class: "token", tabindex: "0" }, token));
}

function section(opts, view) {
  const list = h("div", {});
  const status = h("p", { role: "status" });
  const refresh = async () => {
    const rows = await api("GET", opts.path);
    put(list, table(opts.title, [
      { label: "Name", get: (t) => t.name },
      { label: opts.kindLabel, get: (t) => opts.kind(t) },
      { label: "Created", get: (t) => when(t.created) },
      { label: "Actions", get: (t) => isAdmin()
        ? h("button", { type: "button", class: "danger", "aria-label": `Revoke ${t.name}`, onclick: async () => {
          if (!(await confirmAction(`Revoke the token ${t.name}? Whatever uses it is refused at once.`, "Revoke"))) return;
          try {
            await api("DELETE", `${opts.path}/${encodeURIComponent(t.name)}`);
            await refresh();
            put(status, `${t.name} revoked.`);
          } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
        } }, "Revoke") : "" },
    ], rows, "No tokens."));
  };
  const card = h("section", { class: "card", "data-tokens": opts.id },
    h("h2", {}, opts.title), h("p", {}, opts.intro), status, list,
    isAdmin() ? form(`New ${opts.noun}`, [
      { name: "name", label: "Name", required: true, hint: "Letters, digits, dot, dash, underscore." },
      opts.field,
    ], "Create", async (v) => {
      const made = await api("POST", opts.path, opts.body(v));
      await refresh();
      return shownOnce(made.name, made.token);
    }, { reset: true }) : null);
  add(view, card);
  return refresh();
}

export async function render(view) {
  add(view, h("h1", {}, "API tokens"));
  await Promise.all([
    section({
      id: "docking", title: "Docking API tokens", noun: "docking token", path: "/tokens",
      intro: "For mail servers and scripts that call the docking API (decrypt, encrypt, sign, verify).",
      kindLabel: "Scopes", kind: (t) => t.scopes.join(", "),
      field: { name: "scopes", label: "Scopes", type: "checkboxes", options: ["decrypt", "encrypt", "sign", "verify"] },
      body: (v) => ({ name: v.name || "", scopes: v.scopes || [] }),
    }, view),
    section({
      id: "admin", title: "Admin API tokens", noun: "admin token", path: "/admin-tokens",
      intro: "For automation of the admin API (Authorization: Bearer).",
      kindLabel: "Role", kind: (t) => t.role,
      field: { name: "role", label: "Role", type: "select", options: ["read-only", "auditor", "admin"], value: "read-only" },
      body: (v) => ({ name: v.name || "", role: v.role }),
    }, view),
  ]);
}
