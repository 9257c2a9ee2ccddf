import { h, add, put, confirmAction } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

// The box as a whole. Each of these is refused by the server without the exact phrase (or,
// for a restart, the confirmation here): the page only asks for it.

export async function render(view, { go }) {
  add(view, h("h1", {}, "System"));
  if (!isAdmin()) {
    add(view, h("p", {}, "Only an administrator (role admin) restarts or resets the box."));
    return;
  }
  const status = h("p", { role: "status" });
  add(view, status,
    h("section", { class: "card" }, h("h2", {}, "Restart"),
      h("p", {}, "Restarts the daemon's services: mail in flight is finished first; every session ends."),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!(await confirmAction("Restart the daemon now? Every session ends, yours too.", "Restart"))) return;
        try {
          const a = await api("POST", "/restart");
          put(status, `${a.detail} Log in again in a moment.`);
        } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
      } }, "Restart the daemon")),
    form("Reset admin access", [
      { name: "confirm", label: "Type: reset admin access", required: true, autocomplete: "off" },
    ], "Reset admin access", async (v) => {
      const r = await api("POST", "/setup-token/reset", { confirm: v.confirm || "" });
      setTimeout(() => go("claim"), 4000);
      return `Removed ${r.accounts_removed.length} account(s), ${r.admin_tokens_revoked.length} admin token(s). The console shows the new setup token.`;
    }, { danger: true, intro: "Removes every administrator account, admin token and session; the console then shows a new setup token to claim the box again." }),
    form("Factory reset", [
      { name: "confirm", label: "Type: factory reset", required: true, autocomplete: "off" },
    ], "Factory reset", async (v) => {
      const a = await api("POST", "/factory-reset", { confirm: v.confirm || "" });
      return a.detail;
    }, { danger: true, intro: "Destroys every key and all data on the box, then reboots it. There is no undo." }));
}
