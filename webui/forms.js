// Forms whose every check is the server's: a problem+json answer is shown next to the field
// it names (or above the button), and the button is busy while the call runs.

import { h, put } from "./dom.js";
import { ApiError } from "./api.js";

let seq = 0;

/** A labelled input. spec: {name, label, type, required, autocomplete, hint, options, value,
 * plain (no "optional" mark: empty means the default)}. */
export function field(spec) {
  const id = `f${++seq}-${spec.name}`;
  const err = h("p", { id: `${id}-err`, class: "field-error", "aria-live": "polite" });
  const hint = spec.hint ? h("p", { id: `${id}-hint`, class: "hint" }, spec.hint) : null;
  const described = [hint ? `${id}-hint` : null, `${id}-err`].filter(Boolean).join(" ");
  let input;
  if (spec.type === "select") {
    input = h("select", { id, name: spec.name, "aria-describedby": described },
      spec.options.map((o) => h("option", { value: o, selected: o === spec.value }, o)));
  } else if (spec.type === "checkboxes") {
    input = h("fieldset", { id, "aria-describedby": described },
      h("legend", {}, spec.label),
      spec.options.map((o) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: spec.name, value: o, checked: (spec.value || []).includes(o) }), o)));
    return h("div", { class: "field", "data-field": spec.name }, input, hint, err);
  } else if (spec.type === "textarea") {
    input = h("textarea", { id, name: spec.name, rows: 6, required: !!spec.required, "aria-describedby": described, spellcheck: "false" });
  } else {
    input = h("input", {
      id, name: spec.name, type: spec.type || "text", required: !!spec.required,
      autocomplete: spec.autocomplete || "off", value: spec.value, "aria-describedby": described,
      inputmode: spec.inputmode, placeholder: spec.placeholder, accept: spec.accept,
    });
  }
  return h("div", { class: "field", "data-field": spec.name },
    h("label", { for: id }, spec.label, spec.required || spec.plain || spec.type === "search" || spec.type === "select" ? "" : h("span", { class: "opt" }, " (optional)")),
    input, hint, err);
}

/** Form values: strings, checkbox groups as arrays, files as File. Empty optional ones left out. */
export function values(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") {
      out[el.name] = out[el.name] || [];
      if (el.checked) out[el.name].push(el.value);
    } else if (el.type === "file") {
      if (el.files.length) out[el.name] = el.files[0];
    } else if (el.value !== "") {
      out[el.name] = el.value;
    }
  }
  return out;
}

/** Shows `e` (an ApiError or any error) in `form`: next to the field it names, else on top. */
export function showError(form, e) {
  const p = e instanceof ApiError ? e.problem : { title: "Something went wrong", detail: String(e.message || e) };
  const text = p.detail ? `${p.title}: ${p.detail}` : p.title;
  const fields = [...form.querySelectorAll("[data-field]")];
  // The field the problem names: its own name (as sent) beats its words; a longer name
  // beats a shorter one ("totp_code" over "password" in "send totp_code with the password").
  const detail = (p.detail || "").toLowerCase();
  const score = (n) => (p.field === n ? 3000 : detail.includes(n) ? 2000 : detail.includes(n.replaceAll("_", " ")) ? 1000 : 0) + (n.length);
  const named = fields
    .filter((f) => score(f.dataset.field) >= 1000)
    .sort((a, b) => score(b.dataset.field) - score(a.dataset.field))[0];
  const target = named ? named.querySelector(".field-error") : form.querySelector(".form-error");
  put(target, text);
  const input = named && named.querySelector("input,select,textarea");
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

function clearErrors(form) {
  for (const e of form.querySelectorAll(".field-error,.form-error")) put(e);
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}

/** A form: `fields` (specs or nodes), `label` on the button, `submit(values, form)` async. */
export function form(title, fields, label, submit, opts = {}) {
  const button = h("button", { type: "submit", class: opts.danger ? "danger" : "primary" }, label);
  const f = h("form", { class: "card", novalidate: true, "aria-label": title },
    title ? h("h2", {}, title) : null,
    opts.intro ? h("p", {}, opts.intro) : null,
    fields.map((s) => (s instanceof Node ? s : field(s))),
    h("p", { class: "form-error", role: "alert" }),
    h("div", { class: "row" }, button),
    h("div", { class: "result", "aria-live": "polite" }));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(f);
    put(f.querySelector(".result"));
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    put(f.querySelector(".result"), h("span", { class: "working" }, "Working…"));
    try {
      const shown = await submit(values(f), f);
      // Secrets typed into a form do not stay in it once used.
      if (opts.reset) f.reset();
      else for (const i of f.querySelectorAll("input[type=password]")) i.value = "";
      put(f.querySelector(".result"), shown || "");
    } catch (e) {
      put(f.querySelector(".result"));
      showError(f, e);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  });
  return f;
}
