import { h, add } from "../dom.js";
import { api, setSession } from "../api.js";
import { form } from "../forms.js";

export async function render(view, { go }) {
  add(view, h("h1", {}, "Claim this box"),
    h("p", {}, "The console shows a one-time setup token. It creates the first administrator; once used, it is gone."),
    form("", [
      { name: "setup_token", label: "Setup token", required: true, autocomplete: "off" },
      { name: "username", label: "Administrator's username", required: true, autocomplete: "username" },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "new-password", hint: "At least 12 characters." },
      { name: "password_again", label: "Password again", type: "password", required: true, autocomplete: "new-password" },
    ], "Create the administrator", async (v) => {
      if (v.password !== v.password_again) {
        throw new Error("The two passwords differ");
      }
      await api("POST", "/setup", { setup_token: v.setup_token || "", username: v.username || "", password: v.password || "" });
      setSession(await api("POST", "/session", { username: v.username, password: v.password }));
      go("dashboard");
    }),
    h("p", {}, h("a", { href: "#/login" }, "Log in"), " if the box is claimed already."));
}
