// Settings: every field of the running settings, one form per section, saved with
// PATCH /settings (a JSON merge patch of the fields that changed). The server validates the
// whole: its problem+json names the field, shown next to it; a change it cannot put in force
// is a 409 and nothing changed. Which fields act at once and which wait for a restart is the
// server's list (`live`, `restart_required`). The [policy] section has its own page.

import { h, add, put } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

/** Leaves of `obj` as [path segments, value]; objects recurse, everything else is a leaf. */
function leaves(obj, prefix = [], out = []) {
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) leaves(v, [...prefix, k], out);
    else out.push([[...prefix, k], v]);
  }
  return out;
}

const text = (v) => (v === null || v === undefined ? ""
  : Array.isArray(v) ? v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ")
  : String(v));

/** The value typed for `old`'s type; the server decides whether it is valid. */
export function typed(raw, old) {
  const s = raw.trim();
  if (s === "") return null; // back to the default
  if (typeof old === "boolean") return s === "true" ? true : s === "false" ? false : s;
  if (typeof old === "number") return /^-?\d+(\.\d+)?$/.test(s) ? Number(s) : s;
  if (Array.isArray(old)) {
    const parts = s.split(",").map((x) => x.trim()).filter(Boolean);
    return old.length && typeof old[0] === "number" ? parts.map((x) => (/^-?\d+$/.test(x) ? Number(x) : x)) : parts;
  }
  return s;
}

/** A list of tables (e.g. auth clients): shown, not edited here. */
const tables = (v) => Array.isArray(v) && v.some((x) => x && typeof x === "object");

function setPath(obj, path, v) {
  let o = obj;
  for (const k of path.slice(0, -1)) o = o[k] = o[k] || {};
  o[path[path.length - 1]] = v;
}

export function isLive(live, path) {
  return live.some((l) => (l.endsWith(".") ? path.startsWith(l) : path === l));
}

function sectionForm(section, fields, s, done) {
  const changed = new Set(s.changed || []);
  const waiting = new Set(s.restart_required || []);
  const rows = leaves(fields, [section]);
  const specs = rows.map(([path, v]) => {
    const name = path.join(".");
    const notes = [
      isLive(s.live || [], name) ? "applies at once" : "applies after a restart",
      changed.has(name) ? "changed from the default" : null,
      waiting.has(name) ? "changed, waits for a restart" : null,
    ].filter(Boolean).join("; ");
    const spec = { name, label: path.slice(1).join("."), value: text(v), hint: notes, plain: true };
    if (typeof v === "boolean") Object.assign(spec, { type: "select", options: ["true", "false"], value: String(v) });
    else if (typeof v === "number") spec.inputmode = "numeric";
    else if (Array.isArray(v) && v.some((x) => x && typeof x === "object")) spec.hint = `${notes}; a list of tables: change it in the settings file or with the API`;
    else if (Array.isArray(v)) spec.hint = `${notes}; a comma-separated list`;
    return spec;
  });
  const admin = isAdmin();
  const f = form(`[${section}]`, specs, `Save [${section}]`, async (_v, el) => {
    const patch = {};
    let n = 0;
    for (const [path, old] of rows.filter(([, v]) => !tables(v))) {
      const input = el.querySelector(`[data-field="${CSS.escape(path.join("."))}"] input, [data-field="${CSS.escape(path.join("."))}"] select`);
      if (!input || input.value === (typeof old === "boolean" ? String(old) : text(old))) continue;
      setPath(patch, path, typed(input.value, old));
      n += 1;
    }
    if (!n) return "Nothing changed.";
    const r = await api("PATCH", "/settings", patch);
    const o = r.outcome || {};
    const said = !o.changed || !o.changed.length ? "Nothing changed."
      : `Saved: ${o.changed.join(", ")}.${o.applied && o.applied.length ? ` In force now: ${o.applied.join(", ")}.` : ""}${o.changed.some((c) => !(o.applied || []).includes(c)) ? " The rest applies after a restart (System page)." : ""}`;
    done(said);
    return said;
  }, { intro: admin ? "Leave a field empty to put it back to its default." : null });
  f.dataset.section = section;
  for (const [path] of rows.filter(([, v]) => tables(v))) {
    const input = f.querySelector(`[data-field="${CSS.escape(path.join("."))}"] input`);
    if (input) input.readOnly = true;
  }
  if (!admin) {
    // The server refuses a change from this role; the form says so before anyone tries.
    const fs = h("fieldset", { disabled: true, class: "plain" }, h("legend", { class: "hint" },
      "Your role reads the settings; only an administrator changes them."));
    fs.append(...[...f.children].filter((c) => c.tagName !== "H2" && !c.classList.contains("result") && !c.classList.contains("form-error")));
    f.insertBefore(fs, f.querySelector(".form-error"));
  }
  return f;
}

export async function render(view) {
  const status = h("p", { role: "status", id: "settings-status" });
  const slot = h("div", {});
  const draw = async (said) => {
    const s = await api("GET", "/settings");
    const pending = s.restart_required || [];
    put(slot,
      pending.length ? h("p", { class: "card warn", id: "restart-needed" },
        `Saved, waiting for a restart of the daemon: ${pending.join(", ")}. `, h("a", { href: "#/system" }, "Restart on the System page"), ".") : null,
      Object.entries(s.settings || {}).filter(([section]) => section !== "policy").map(([section, fields]) =>
        (fields && typeof fields === "object" ? sectionForm(section, fields, s, (m) => draw(m)) : null)));
    if (said) put(status, said);
  };
  await draw();
  add(view, h("h1", {}, "Settings"),
    h("p", {}, "The running settings, every field (the file: ", h("code", {}, "settings.toml"),
      "). Mail policies are on the ", h("a", { href: "#/policies" }, "Policies"), " page."),
    status, slot);
}
