import { h, add, table } from "../dom.js";
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
  const isChanged = (key) => [...changed].some((c) => key === c || key.startsWith(`${c}.`));
  add(view, h("h1", {}, "Settings"),
    h("p", {}, "The running settings, every field. Changing them here comes with the settings API; until then edit settings.toml and restart."),
    Object.entries(s.settings || {}).map(([section, fields]) => {
      const rows = fields && typeof fields === "object" && !Array.isArray(fields) ? flatten(fields) : [["", String(fields)]];
      return h("section", { class: "card", "data-section": section }, h("h2", {}, h("code", {}, `[${section}]`)),
        table(`Settings [${section}]`, [
          { label: "Setting", get: (r) => h("code", {}, r[0]) },
          { label: "Value", get: (r) => r[1] },
          { label: "Changed from the default", get: (r) => (isChanged(r[0] ? `${section}.${r[0]}` : section) ? "yes" : "") },
        ], rows));
    }));
}
