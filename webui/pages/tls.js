import { h, add, put, facts, when, download } from "../dom.js";
import { api, isAdmin, fileBase64 } from "../api.js";
import { form } from "../forms.js";

// The certificate the box's TLS listeners serve (admin API /tls): shown to every role; an
// administrator makes a key and CSR on the box (the key never leaves it), installs the
// certificate the organisation's CA signed, or uploads a key with its certificate. Every
// check is the server's; a refusal is shown next to the field it names.

const list = (s) => (s || "").split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);

/** A certificate from a file input (PEM text as is, DER as base64) or pasted PEM. */
async function certificateText(file, pasted) {
  if (!file) return pasted || "";
  const buf = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(buf);
  if (text.includes("-----BEGIN")) return text;
  let bin = "";
  for (const b of buf) bin += String.fromCharCode(b);
  return btoa(bin);
}

function served(c) {
  const days = c.days_left < 0 ? `expired ${-c.days_left} days ago` : `${c.days_left} days left`;
  return h("section", { class: "card", "aria-labelledby": "tls-now" },
    h("h2", { id: "tls-now" }, "Served now"),
    facts([
      ["Subject", c.subject],
      ["Names", c.names.length ? c.names.join(", ") : "none"],
      ["Issuer", c.self_signed ? `${c.issuer} (self-signed)` : c.issuer],
      ["Valid from", when(c.not_before)],
      ["Valid until", `${when(c.not_after)} (${days})`],
      ["SHA-256", h("code", { class: "fp" }, c.sha256)],
      ["Key", c.key],
      ["Chain", `${c.chain_length} certificate(s)`],
      ["Source", c.source === "settings" ? "the settings' files ([tls] certificate, key)" : "the box (key in the vault)"],
    ]),
    h("p", { class: "hint" }, c.reloadable
      ? "A new certificate is served from the next connection on: no restart."
      : "A new certificate is served after a restart."));
}

export async function render(view, { go }) {
  const tls = await api("GET", "/tls");
  const refresh = () => go("tls");
  add(view, h("h1", {}, "TLS certificate"),
    h("p", {}, "The certificate of the box's listeners: the web UI and admin API, the docking API, SMTP and IMAP."),
    served(tls));
  const status = h("p", { role: "status" });
  if (tls.request) {
    const r = tls.request;
    const card = h("section", { class: "card", "aria-labelledby": "tls-req" },
      h("h2", { id: "tls-req" }, "Waiting for the signed certificate"),
      facts([
        ["Subject", r.subject],
        ["Names", r.names.join(", ")],
        ["Made", when(r.created)],
        ["CSR SHA-256", h("code", { class: "fp" }, r.csr_sha256)],
      ]),
      h("div", { class: "row" }, h("button", { type: "button", onclick: async () => {
        try {
          const a = await api("GET", "/tls/csr", undefined, { raw: true, accept: "*/*" });
          download(await a.blob(), "sealgate-tls.csr");
          put(status, "sealgate-tls.csr saved.");
        } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
      } }, "Download the CSR")), status);
    add(view, card);
    if (isAdmin() && tls.source !== "settings") {
      add(card, form("Install the signed certificate", [
        { name: "certificate_file", label: "Certificate file (PEM or DER)", type: "file", accept: ".pem,.crt,.cer,.der" },
        { name: "certificate", label: "Or paste PEM", type: "textarea", hint: "The certificate first, then the chain above it." },
        { name: "chain", label: "The chain above it (PEM)", type: "textarea", hint: "Its issuer first; optional if the file holds it." },
      ], "Install", async (v) => {
        const body = { certificate: await certificateText(v.certificate_file, v.certificate) };
        if (v.chain) body.chain = v.chain;
        const a = await api("PUT", "/tls/certificate", body);
        setTimeout(refresh, 1500);
        return `Installed: ${a.subject}, valid until ${when(a.not_after)}. ${a.restart_required ? "Restart to serve it." : "Served from the next connection on."}`;
      }));
    }
  }
  if (!isAdmin()) return;
  if (tls.source === "settings") {
    add(view, h("p", { class: "card" }, "[tls] certificate and key in the settings name the operator's files: remove them there to manage the certificate here."));
    return;
  }
  add(view, h("div", { class: "grid" },
    form("Make a key and CSR", [
      { name: "common_name", label: "Common name", required: true, hint: "Usually the box's name, e.g. sealgate.example.org" },
      { name: "organization", label: "Organisation" },
      { name: "dns_names", label: "DNS names", hint: "Comma separated; the names clients connect to." },
      { name: "ip_addresses", label: "IP addresses", hint: "Comma separated." },
      { name: "key_algorithm", label: "Key", type: "select", options: ["p256", "rsa3072"], value: "p256" },
    ], "Make the key and CSR", async (v) => {
      const body = { common_name: v.common_name || "", dns_names: list(v.dns_names), ip_addresses: list(v.ip_addresses) };
      if (v.organization) body.organization = v.organization;
      if (v.key_algorithm) body.key_algorithm = v.key_algorithm;
      await api("POST", "/tls/request", body, { accept: "application/pkcs10" });
      await refresh();
    }, { intro: "The box makes the key and keeps it; your organisation's CA signs the request (CSR); then install its answer here. The certificate served now stays until then." }),
    form("Upload a key and certificate", [
      { name: "pkcs12", label: "PKCS#12 file", type: "file", accept: ".p12,.pfx" },
      { name: "password", label: "PKCS#12 password", type: "password", autocomplete: "off" },
      { name: "certificate", label: "Or the certificate (PEM)", type: "textarea", hint: "The certificate first, then the chain above it." },
      { name: "key", label: "With its private key (PEM)", type: "textarea" },
    ], "Upload", async (v) => {
      const body = v.pkcs12
        ? { pkcs12: await fileBase64(v.pkcs12), password: v.password || "" }
        : { certificate: v.certificate || "", key: v.key || "" };
      const a = await api("POST", "/tls/import", body);
      setTimeout(refresh, 1500);
      return `Installed: ${a.subject}, valid until ${when(a.not_after)}.`;
    }, { intro: "A key made elsewhere with its certificate, for when your CA makes the keys.", reset: true })));
}
