import { h, add, put, table, when, confirmAction, facts } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

function ownCard(session) {
  const totpSlot = h("div", {});
  const startTotp = async () => {
    try {
      const e = await api("POST", "/session/totp");
      put(totpSlot,
        h("div", { class: "once" },
          h("p", {}, "Add this secret to your authenticator app (shown only now), then enter its first code."),
          facts([["Secret", h("code", { class: "token" }, e.secret)], ["URI", h("code", { class: "token" }, e.otpauth_uri)]])),
        form("Turn TOTP on", [
          { name: "code", label: "Code from the app", required: true, inputmode: "numeric", autocomplete: "one-time-code" },
        ], "Turn on", async (v) => {
          await api("POST", "/session/totp/confirm", { code: v.code || "" });
          put(totpSlot, h("p", { role: "status" }, "TOTP is on: login asks for a code from now on."));
        }));
    } catch (err) {
      put(totpSlot, h("p", { role: "alert" }, `${err.message}: ${(err.problem && err.problem.detail) || ""}`));
    }
  };
  return h("section", { class: "card" }, h("h2", {}, "Your account"),
    facts([["Username", session.username], ["Role", session.role],
      ["Session", `ends after ${Math.round(session.idle_timeout_secs / 60)} min idle, ${Math.round(session.absolute_timeout_secs / 3600)} h at most`]]),
    form("Change your password", [
      { name: "current_password", label: "Current password", type: "password", required: true, autocomplete: "current-password" },
      { name: "new_password", label: "New password", type: "password", required: true, autocomplete: "new-password", hint: "At least 12 characters. Your other sessions end." },
    ], "Change password", async (v) => {
      await api("PUT", "/session/password", { current_password: v.current_password || "", new_password: v.new_password || "" });
      return "Password changed.";
    }),
    h("h3", {}, "Two-factor login (TOTP)"),
    h("button", { type: "button", onclick: startTotp }, "Set up TOTP"),
    totpSlot);
}

export async function render(view, { session }) {
  const list = h("div", {});
  const status = h("p", { role: "status" });
  const refresh = async () => {
    const rows = await api("GET", "/accounts");
    put(list, table("Administrator accounts", [
      { label: "Username", get: (a) => a.username },
      { label: "Role", get: (a) => a.role },
      { label: "TOTP", get: (a) => (a.totp ? "on" : "off") },
      { label: "Created", get: (a) => when(a.created) },
      { label: "Actions", get: (a) => (isAdmin() && a.username !== session.username
        ? h("div", { class: "row" }, a.totp ? h("button", { type: "button", "aria-label": `Turn TOTP off for ${a.username}`, onclick: async () => {
          if (!(await confirmAction(`Turn TOTP off for ${a.username}? Login then needs only the password.`, "Turn off"))) return;
          try {
            await api("DELETE", `/accounts/${encodeURIComponent(a.username)}/totp`);
            await refresh();
            put(status, `TOTP is off for ${a.username}.`);
          } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
        } }, "Turn TOTP off") : null, h("button", { type: "button", class: "danger", "aria-label": `Delete ${a.username}`, onclick: async () => {
          if (!(await confirmAction(`Delete the account ${a.username}? Its sessions end at once.`, "Delete"))) return;
          try {
            await api("DELETE", `/accounts/${encodeURIComponent(a.username)}`);
            await refresh();
            put(status, `${a.username} deleted.`);
          } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
        } }, "Delete")) : "") },
    ], rows));
  };
  const sessions = h("div", { id: "sessions" });
  const refreshSessions = async () => {
    const rows = await api("GET", "/sessions");
    put(sessions, table("Sessions", [
      { label: "Account", get: (x) => x.username },
      { label: "Role", get: (x) => x.role },
      { label: "Logged in", get: (x) => when(x.created) },
      { label: "Last call", get: (x) => when(x.last_seen) },
      { label: "Actions", get: (x) => (x.current ? "this session (use Log out)"
        : isAdmin() || x.username === session.username ? h("button", { type: "button", class: "danger", "data-session": x.id,
          "aria-label": `End session of ${x.username} from ${when(x.created)}`, onclick: async () => {
            if (!(await confirmAction(`End this session of ${x.username}? Its browser is sent to the login.`, "End session"))) return;
            try {
              await api("DELETE", `/sessions/${encodeURIComponent(x.id)}`);
              put(status, `The session of ${x.username} ended.`);
            } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
            await refreshSessions();
          } }, "End session") : "") },
    ], rows, "No sessions."));
  };
  await Promise.all([refresh(), refreshSessions()]);
  add(view, h("h1", {}, "Administrators"), status,
    h("section", { class: "card" }, h("h2", {}, "Accounts"),
      h("p", {}, "admin: everything; auditor: reads everything, the audit log and the support bundle; read-only: reads the state."),
      list),
    h("section", { class: "card" }, h("h2", {}, "Sessions"),
      h("p", {}, isAdmin() ? "Every browser logged in now. Ending one sends it to the login at its next call."
        : "Your browsers logged in now. Ending one sends it to the login at its next call."),
      sessions),
    isAdmin() ? form("New account", [
      { name: "username", label: "Username", required: true, hint: "1 to 64 characters of a-z 0-9 . _ -" },
      { name: "role", label: "Role", type: "select", options: ["read-only", "auditor", "admin"], value: "read-only" },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "new-password", hint: "At least 12 characters." },
    ], "Create account", async (v) => {
      const a = await api("POST", "/accounts", { username: v.username || "", role: v.role, password: v.password || "" });
      await refresh();
      return `${a.username} (${a.role}) created.`;
    }, { reset: true }) : null,
    ownCard(session));
}
