import { h, add, put, table, facts, confirmAction } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { form } from "../forms.js";

// The network: the kernel's links, addresses and routes as the daemon reads them
// (GET /network), the interfaces and routes the settings make the daemon manage, and the
// split-horizon DNS views; changed only through PATCH /settings (network.* apply at once).
// A change that removes an address or route the box has waits for POST /network/confirm:
// the page counts down and offers to keep it, else the server puts the previous settings back.

const list = (s) => (s || "").split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
const lines = (s) => (s || "").split("\n").map((x) => x.trim()).filter(Boolean);
const label = (i) => i.name || i.mac || "?";

async function patch(body) {
  const r = await api("PATCH", "/settings", body);
  return r.outcome || {};
}

function said(o) {
  const waits = o.confirm_within_secs ? ` Confirm within ${o.confirm_within_secs} s, or the previous network settings come back.` : "";
  const later = (o.changed || []).some((c) => !(o.applied || []).includes(c)) ? " It applies after a restart (System page)." : "";
  return `Saved.${waits}${later}`;
}

function countdown(secs, refresh) {
  const left = h("strong", { id: "confirm-left" }, String(secs));
  const st = h("p", { role: "status" });
  const card = h("section", { class: "card warn", "aria-labelledby": "confirm-h", id: "network-confirm" },
    h("h2", { id: "confirm-h" }, "Keep this network change?"),
    h("p", {}, "The last change removed an address or route the box had. Unless it is kept within ",
      left, " seconds, the previous network settings come back (in case it cut you off)."),
    isAdmin() ? h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: async () => {
      try {
        await api("POST", "/network/confirm");
        clearInterval(timer);
        put(st, "Kept.");
        setTimeout(refresh, 800);
      } catch (e) { put(st, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
    } }, "Keep this change")) : null, st);
  let n = secs;
  const timer = setInterval(() => {
    if (!card.isConnected) { clearInterval(timer); return; }
    n -= 1;
    put(left, String(Math.max(n, 0)));
    if (n <= 0) {
      clearInterval(timer);
      put(st, "Time ran out: the previous network settings are back.");
      setTimeout(refresh, 2000);
    }
  }, 1000);
  return card;
}

function removeButton(what, name, onRemove) {
  return h("button", { type: "button", class: "danger small", "aria-label": `Remove ${what} ${name}`, onclick: async () => {
    if (!(await confirmAction(`Remove ${what} ${name}?`, "Remove"))) return;
    await onRemove();
  } }, "Remove");
}

export async function render(view, { go }) {
  const refresh = () => go("network");
  const [net, s] = await Promise.all([api("GET", "/network"), api("GET", "/settings")]);
  const ns = (s.settings && s.settings.network) || { interfaces: [], routes: [] };
  const dns = (s.settings && s.settings.dns) || { views: [] };
  const admin = isAdmin();
  const status = h("p", { role: "status", id: "network-status" });
  const act = async (fn) => {
    try { const text = said(await fn()); await refresh(); put(status, text); } catch (e) { put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`); }
  };
  add(view, h("h1", {}, "Network"), status);
  if (net.confirm_within_secs) add(view, countdown(net.confirm_within_secs, refresh));
  if (!net.managing) {
    add(view, h("p", { class: "card", id: "not-managed" },
      "The box manages no interface and no route: the network is as the system set it up, and the daemon changes nothing in it until an interface or route is set here."));
  }

  // --- What the kernel has. ---
  if (net.error) {
    add(view, h("p", { class: "card bad", role: "alert" }, `The network could not be read: ${net.error}`));
  } else {
    add(view, h("section", { class: "card", "aria-labelledby": "links-h" }, h("h2", { id: "links-h" }, "Links"),
      table("The kernel's links", [
        { label: "Link", get: (l) => l.name },
        { label: "MAC", get: (l) => l.mac || "–" },
        { label: "MTU", get: (l) => l.mtu },
        { label: "State", get: (l) => `${l.up ? "up" : "down"}, ${l.carrier ? "carrier" : "no carrier"}` },
        { label: "Managed", get: (l) => (l.managed ? "yes" : "no") },
        { label: "Addresses", get: (l) => l.addresses.join(", ") || "–" },
      ], net.links || [], "No links."),
      h("section", { "aria-labelledby": "routes-h" }, h("h3", { id: "routes-h" }, "Routes"),
        table("The kernel's routes", [
          { label: "To", get: (r) => r.to },
          { label: "Via", get: (r) => r.via || "directly" },
          { label: "From the settings", get: (r) => (r.ours ? "yes" : "no") },
        ], net.routes || [], "No routes."))));
  }

  // --- What the settings make the daemon manage. ---
  const ifaces = ns.interfaces || [];
  const routes = ns.routes || [];
  add(view, h("section", { class: "card", "aria-labelledby": "managed-h" }, h("h2", { id: "managed-h" }, "Managed interfaces and routes"),
    table("Managed interfaces", [
      { label: "Interface", get: (i) => label(i) },
      { label: "Addresses", get: (i) => (i.addresses || []).join(", ") || (i.dhcp ? "DHCP" : "–") },
      { label: "MTU", get: (i) => i.mtu || "as it is" },
      { label: "VLAN", get: (i) => (i.vlan ? `${i.vlan.id} on ${i.vlan.parent}` : "–") },
      { label: "", get: (i) => (admin ? removeButton("interface", label(i), () => act(() =>
        patch({ network: { interfaces: ifaces.filter((x) => x !== i) } }))) : "") },
    ], ifaces, "None: no interface is managed."),
    table("Static routes", [
      { label: "To", get: (r) => r.to },
      { label: "Via", get: (r) => r.via },
      { label: "", get: (r) => (admin ? removeButton("route to", r.to, () => act(() =>
        patch({ network: { routes: routes.filter((x) => x !== r) } }))) : "") },
    ], routes, "No static routes."),
    h("p", { class: "hint" }, `A change that removes an address or route waits ${ns.confirm_secs ?? 60} s for confirmation (network.confirm_secs on the Settings page).`)));
  if (admin) {
    add(view, h("div", { class: "grid" },
      form("Set an interface", [
        { name: "name", label: "Link name", required: true, hint: "e.g. eth0; for a VLAN the name it gets" },
        { name: "addresses", label: "Addresses", hint: "With prefix length, comma separated: 192.0.2.10/24, 2001:db8::10/64" },
        { name: "mtu", label: "MTU", inputmode: "numeric" },
        { name: "vlan_parent", label: "VLAN on link" },
        { name: "vlan_id", label: "VLAN ID", inputmode: "numeric" },
      ], "Set the interface", async (v) => {
        const i = { name: (v.name || "").trim(), addresses: list(v.addresses) };
        if (v.mtu) i.mtu = /^\d+$/.test(v.mtu) ? Number(v.mtu) : v.mtu;
        if (v.vlan_parent || v.vlan_id) i.vlan = { parent: v.vlan_parent || "", id: /^\d+$/.test(v.vlan_id || "") ? Number(v.vlan_id) : v.vlan_id };
        const o = await patch({ network: { interfaces: [...ifaces.filter((x) => x.name !== i.name), i] } });
        setTimeout(refresh, 1500);
        return said(o);
      }, { intro: "Applied at once; an interface the kernel does not have, or an address it cannot take, is refused and nothing changes." }),
      form("Add a static route", [
        { name: "to", label: "Destination", required: true, hint: "e.g. 198.51.100.0/24, 0.0.0.0/0 for the default route" },
        { name: "via", label: "Gateway", required: true, hint: "Inside the subnet of a managed interface" },
      ], "Add the route", async (v) => {
        const o = await patch({ network: { routes: [...routes, { to: (v.to || "").trim(), via: (v.via || "").trim() }] } });
        setTimeout(refresh, 1500);
        return said(o);
      })));
  }

  // --- The split-horizon DNS. ---
  const views = dns.views || [];
  add(view, h("section", { class: "card", "aria-labelledby": "dns-h" }, h("h2", { id: "dns-h" }, "DNS"),
    facts([
      ["Listens on", dns.listen || "nowhere (no DNS server)"],
      ["Forwarders", (dns.forwarders || []).join(", ") || "none"],
      ["Forwards for", (dns.recursion_networks || []).join(", ") || "nobody"],
    ]),
    h("p", { class: "hint" }, "These three are on the ", h("a", { href: "#/settings" }, "Settings"), " page ([dns]). The DNS settings apply after a restart."),
    table("DNS views", [
      { label: "View", get: (w) => w.name },
      { label: "Clients", get: (w) => (w.networks || []).join(", ") },
      { label: "Records", get: (w) => h("ul", { class: "plain" }, (w.records || []).map((r) => h("li", {}, h("code", {}, r)))) },
      { label: "", get: (w) => (admin ? removeButton("DNS view", w.name, () => act(() =>
        patch({ dns: { views: views.filter((x) => x !== w) } }))) : "") },
    ], views, "No views: every name is forwarded.")));
  if (admin) {
    add(view, form("Add a DNS view", [
      { name: "view_name", label: "View name", required: true, hint: "e.g. inside" },
      { name: "networks", label: "Client networks", required: true, hint: "Comma separated: 10.0.0.0/8, fd00::/8" },
      { name: "records", label: "Records", type: "textarea", hint: "One zone-file line each: mail.example.org. 300 IN A 10.0.0.25" },
    ], "Add the view", async (v) => {
      const w = { name: (v.view_name || "").trim(), networks: list(v.networks), records: lines(v.records) };
      const o = await patch({ dns: { views: [...views.filter((x) => x.name !== w.name), w] } });
      setTimeout(refresh, 1500);
      return said(o);
    }));
  }
}
