import { h, table } from "../dom.js";
import { api } from "../api.js";

function flatten(obj, prefix = "", out = []) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, Array.isArray(v) ? v.map((x) => (typeof x === "object" ? JSON.stringify(x) : x)).join(", ") : v === null ? "–" : String(v)]);
  }
  return out;
}

export async function render(view) {
  const s = await api("GET", "/settings");
  const changed = new Set(s.changed || []);
  const model = s.settings || Object.fromEntries(Object.entries(s).filter(([k]) => k !== "changed"));
  const rows = flatten(model);
  view.append(h("h1", {}, "Settings"),
    h("p", {}, "The running settings. Changing them here comes with the settings API; until then edit settings.toml and restart."),
    h("section", { class: "card" }, table("Settings", [
      { label: "Setting", get: (r) => h("code", {}, r[0]) },
      { label: "Value", get: (r) => r[1] },
      { label: "Changed from the default", get: (r) => ([...changed].some((c) => r[0] === c || r[0].startsWith(`${c}.`)) ? "yes" : "") },
    ], rows)));
}
