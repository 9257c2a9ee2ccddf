import { h, add } from "../dom.js";
import { api, setSession } from "../api.js";
import { form } from "../forms.js";

export async function render(view, { go }) {
  add(view, h("h1", {}, "Log in"),
    form("", [
      { name: "username", label: "Username", required: true, autocomplete: "username" },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "current-password" },
      { name: "totp_code", label: "TOTP code", inputmode: "numeric", autocomplete: "one-time-code", hint: "Six digits from your authenticator app, if TOTP is on for this account." },
    ], "Log in", async (v) => {
      setSession(await api("POST", "/session", v));
      go("dashboard");
    }),
    h("p", {}, "A new box? ", h("a", { href: "#/claim" }, "Claim it with the setup token from the console"), "."));
}
