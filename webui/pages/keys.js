import { h, add, put, table, when, confirmAction, download, facts } from "../dom.js";
import { api, isAdmin, fileBase64 } from "../api.js";
import { form, field } from "../forms.js";

function caCard(ca, refresh) {
  const card = h("section", { class: "card" }, h("h2", {}, "The box's CA"));
  const caBody = (v) => {
    const body = { name: v.name || "" };
    if (v.domains) body.domains = v.domains.split(",").map((d) => d.trim()).filter(Boolean);
    return body;
  };
  const caFields = () => [
    { name: "name", label: "CA name", required: true },
    { name: "domains", label: "Mail domains", hint: "Comma separated, e.g. example.org" },
  ];
  const fetchPem = async (path, name, st) => {
    try {
      const r = await api("GET", path, undefined, { raw: true, accept: "*/*" });
      download(await r.blob(), name);
      put(st, `${name} saved.`);
    } catch (e) { put(st, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
  };
  if (ca.state === "none") {
    card.append(h("p", {}, "The box has no CA yet: it cannot issue certificates."));
    if (isAdmin()) {
      card.append(h("div", { class: "grid" },
        form("Create a root CA", caFields(), "Create the CA", async (v) => {
          await api("POST", "/ca", caBody(v));
          await refresh();
        }),
        form("Create an intermediate CA", caFields(), "Create the key and CSR", async (v) => {
          await api("POST", "/ca/intermediate", caBody(v), { accept: "application/pkcs10" });
          await refresh();
        }, { intro: "The box makes the key; your organisation's CA signs the request (CSR); then install its answer here." })));
    }
  } else if (ca.state === "pending") {
    const st = h("p", { role: "status" });
    card.append(h("p", {}, `An intermediate CA (${ca.name || ""}) waits for the certificate your organisation's CA signs.`),
      h("div", { class: "row" }, h("button", { type: "button", onclick: () => fetchPem("/ca/csr", "box-ca.csr", st) }, "Download the CSR")), st);
    if (isAdmin()) {
      card.append(form("Install the signed certificate", [
        { name: "file", label: "Certificate file (PEM or DER)", type: "file", accept: ".pem,.crt,.cer,.der" },
        { name: "pem", label: "Or paste PEM", type: "textarea" },
        { name: "chain", label: "The corporate chain above it (PEM)", type: "textarea", hint: "Its issuer first; optional if the file holds it." },
      ], "Install", async (v) => {
        let certificate = v.pem || "";
        if (v.file) {
          const buf = new Uint8Array(await v.file.arrayBuffer());
          const text = new TextDecoder().decode(buf);
          certificate = text.includes("-----BEGIN") ? text : btoa(String.fromCharCode(...buf));
        }
        const body = { certificate };
        if (v.chain) body.chain = v.chain;
        await api("PUT", "/ca/certificate", body);
        await refresh();
      }));
    }
  } else {
    card.append(h("p", {}, `State: ${ca.state}. Subject: ${ca.subject || "–"}.`),
      facts([
        ["Kind", ca.intermediate ? "intermediate (under a corporate CA)" : "root"],
        ["Valid until", when(ca.not_after)],
        ["SHA-256", h("code", {}, ca.sha256_fingerprint || "–")],
        ["Revoked certificates", ca.revoked],
        ["CRL number", ca.crl_number],
      ]));
    if (ca.state === "active") {
      const st = h("p", { role: "status" });
      const freshCrl = async () => {
        try {
          const r = await api("POST", "/ca/crl", undefined, { raw: true, accept: "*/*" });
          download(await r.blob(), "box-ca.crl.pem");
          await refresh();
        } catch (e) { put(st, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
      };
      card.append(h("div", { class: "row" },
        h("button", { type: "button", onclick: () => fetchPem("/ca/certificate", "box-ca.pem", st) }, "Download the CA certificate"),
        h("button", { type: "button", onclick: () => fetchPem("/ca/crl", "box-ca.crl.pem", st) }, "Download the CRL"),
        isAdmin() ? h("button", { type: "button", onclick: freshCrl }, "Issue a fresh CRL") : null), st);
    }
  }
  return card;
}

function importForm(refresh) {
  const drop = h("div", { class: "drop", tabindex: "-1" }, "Drop a .p12 or .pfx file here, or choose one below.");
  const f = form("Import a PKCS#12 file", [
    drop,
    { name: "file", label: "PKCS#12 file", type: "file", required: true, accept: ".p12,.pfx,application/x-pkcs12" },
    { name: "password", label: "File password", type: "password", required: true, autocomplete: "off" },
    { name: "user", label: "Owner's address", type: "email", hint: "Default: the address in the certificate." },
  ], "Import", async (v) => {
    if (!v.file) throw new Error("Choose a PKCS#12 file");
    const body = { pkcs12: await fileBase64(v.file), password: v.password || "" };
    if (v.user) body.user = v.user;
    const keys = await api("POST", "/keys/import", body);
    await refresh();
    return `Imported ${keys.length} key(s) for ${[...new Set(keys.map((k) => k.user))].join(", ")}.`;
  });
  const input = f.querySelector("input[type=file]");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      put(drop, `Chosen: ${e.dataTransfer.files[0].name}`);
    }
  });
  return f;
}

function issueForm(refresh) {
  return form("Issue a certificate from the box's CA", [
    { name: "user", label: "User's address", type: "email", required: true },
  ], "Issue", async (v) => {
    const keys = await api("POST", "/keys/issue", { user: v.user || "" });
    await refresh();
    return `Issued: ${keys.map((k) => `${k.user}, serial ${k.serial}, valid until ${when(k.not_after)}`).join("; ")}.`;
  });
}

async function exportCert(user, status) {
  try {
    const r = await api("GET", `/keys/${encodeURIComponent(user)}/certificate`, undefined, { raw: true, accept: "application/pem-certificate-chain" });
    download(await r.blob(), `${user}.pem`);
    put(status, `Certificate of ${user} saved.`);
  } catch (e) {
    put(status, `${e.message}${e.problem && e.problem.detail ? `: ${e.problem.detail}` : ""}`);
  }
}

async function revoke(user, status, refresh) {
  if (!(await confirmAction(`Revoke every certificate the box's CA issued to ${user}? Mail to this user is no longer encrypted to them; old mail still decrypts.`, "Revoke"))) return;
  try {
    const r = await api("POST", `/keys/${encodeURIComponent(user)}/revoke`);
    await refresh();
    put(document.getElementById("keys-status"), `Revoked for ${user}: ${r.revoked.length ? r.revoked.join(", ") : "nothing issued by the box's CA"}.`);
  } catch (e) {
    put(status, `${e.message}${e.problem && e.problem.detail ? `: ${e.problem.detail}` : ""}`);
  }
}

const problemText = (e) => `${e.message}${e.problem && e.problem.detail ? `: ${e.problem.detail}` : ""}`;

async function details(user, slot, refresh, note = "") {
  const u = await api("GET", `/keys/${encodeURIComponent(user)}`);
  const status = h("p", { role: "status" }, note);
  const enc = encodeURIComponent(user);
  const act = async (fn) => {
    let msg;
    try { msg = await fn(); } catch (e) { put(status, problemText(e)); return; }
    await refresh();
    await details(user, slot, refresh, msg);
  };
  const admin = isAdmin();
  const card = h("section", { class: "card", "aria-label": `Keys of ${user}` },
    h("h2", { tabindex: "-1" }, `Keys of ${user}`), status,
    table(`Keys of ${user}`, [
      { label: "Key", get: (k) => `#${k.id}` },
      { label: "Status", get: (k) => h("span", { class: `badge ${k.status}` }, k.status) },
      { label: "Use", get: (k) => [k.id === u.signing_key ? "signs" : null, k.id === u.encryption_key ? "receives" : null].filter(Boolean).join(", ") || "decrypts old mail" },
      { label: "Type", get: (k) => k.key_type },
      { label: "Issuer", get: (k) => k.issuer },
      { label: "Serial", get: (k) => k.serial },
      { label: "Valid until", get: (k) => when(k.not_after) },
    ], u.keys),
    admin ? h("div", { class: "row" },
      h("button", { type: "button", onclick: () => act(async () => {
        const keys = await api("POST", `/keys/${enc}/renew`);
        return `Renewed: new key #${keys.map((k) => k.id).join(", #")}.`;
      }) }, "Renew from the box's CA"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!(await confirmAction(`Retire the active keys of ${user}? They stop signing and receiving; they still decrypt old mail.`, "Retire"))) return;
        await act(async () => {
          const r = await api("POST", `/keys/${enc}/retire`);
          return `Retired: #${r.retired.map((k) => k.id).join(", #") || "none"}.`;
        });
      } }, "Retire")) : null,
    admin ? form("Export the private keys (PKCS#12)", [
      { name: "password", label: "Password for the file", type: "password", required: true, autocomplete: "new-password" },
    ], "Export keys", async (v) => {
      const r = await api("POST", `/keys/${enc}/pkcs12`, { password: v.password || "" }, { raw: true, accept: "application/pkcs12" });
      download(await r.blob(), `${user}.p12`);
      return `${user}.p12 saved (every key of ${user}, protected by the password).`;
    }, { intro: "Every key of this user, for a mail client or a backup. The export is audited." }) : null);
  put(slot, card);
  card.querySelector("h2").focus();
}

export async function render(view) {
  const list = h("div", { id: "keys-list" });
  const status = h("p", { id: "keys-status", role: "status" });
  const search = field({ name: "search", label: "Search users", type: "search" });
  const caSlot = h("div", {});
  const detailSlot = h("div", {});
  let keys = [];
  const draw = () => {
    const q = (search.querySelector("input").value || "").toLowerCase();
    const rows = keys.filter((k) => k.user.toLowerCase().includes(q));
    put(list, table("Users' keys", [
      { label: "User", get: (k) => k.user },
      { label: "Key", get: (k) => `#${k.id}` },
      { label: "Purpose", get: (k) => k.purpose },
      { label: "Source", get: (k) => k.source },
      { label: "Status", get: (k) => h("span", { class: `badge ${k.status}` }, k.status) },
      { label: "Actions", get: (k) => h("div", { class: "row" },
        h("button", { type: "button", onclick: () => details(k.user, detailSlot, refresh).catch((e) => put(status, problemText(e))), "aria-label": `Details of ${k.user}` }, "Details"),
        h("button", { type: "button", onclick: () => exportCert(k.user, status), "aria-label": `Export certificate of ${k.user}` }, "Export certificate"),
        isAdmin() && k.status === "active" && k.source === "ca"
          ? h("button", { type: "button", class: "danger", onclick: () => revoke(k.user, status, refresh), "aria-label": `Revoke certificates of ${k.user}` }, "Revoke")
          : null) },
    ], rows, "No keys yet."));
  };
  const refresh = async () => {
    const [k, ca] = await Promise.all([api("GET", "/keys"), api("GET", "/ca")]);
    keys = k;
    put(caSlot, caCard(ca, refresh));
    draw();
  };
  search.querySelector("input").addEventListener("input", draw);
  await refresh();
  add(view, h("h1", {}, "Users and keys"), status,
    h("section", { class: "card" }, h("h2", {}, "Keys"), search, list),
    detailSlot,
    isAdmin() ? h("div", { class: "grid" }, importForm(refresh), issueForm(refresh)) : null,
    caSlot);
}
