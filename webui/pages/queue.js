import { h, add, put, table, when, confirmAction } from "../dom.js";
import { api, isAdmin } from "../api.js";
import { field } from "../forms.js";

const LABEL = { retry: "Retry", hold: "Hold", release: "Release" };
const ACTIONS = { queued: ["retry", "hold"], deferred: ["retry", "hold"], held: ["release"], bounced: [] };

export async function render(view) {
  const out = h("div", {});
  const status = h("p", { role: "status" });
  const state = field({ name: "state", label: "State", type: "select", options: ["all", "queued", "deferred", "held", "bounced"], value: "all" });
  const act = async (m, action) => {
    try {
      if (action === "delete") {
        if (!(await confirmAction(`Delete message ${m.id} from ${m.from || "<>"}? No delivery status notice is sent.`, "Delete"))) return;
        await api("DELETE", `/queue/${encodeURIComponent(m.id)}`);
      } else {
        await api("POST", `/queue/${encodeURIComponent(m.id)}/${action}`);
      }
      put(status, `${m.id}: ${action} done.`);
      await load();
    } catch (e) {
      put(status, `${e.message}: ${(e.problem && e.problem.detail) || ""}`);
    }
  };
  const load = async () => {
    const s = state.querySelector("select").value;
    const list = await api("GET", s === "all" ? "/queue" : `/queue?state=${s}`);
    put(out, table("Queued messages", [
      { label: "ID", get: (m) => m.id },
      { label: "State", get: (m) => h("span", { class: `badge ${m.state}` }, m.state) },
      { label: "Direction", get: (m) => m.direction },
      { label: "From", get: (m) => m.from || "<>" },
      { label: "Recipients", get: (m) => m.recipients.map((r) => `${r.address} (${r.status}${r.reply ? `: ${r.reply}` : ""})`).join("; ") },
      { label: "Received", get: (m) => when(m.received) },
      { label: "Attempts", get: (m) => m.attempts },
      { label: "Actions", get: (m) => isAdmin() ? h("div", { class: "row" },
        (ACTIONS[m.state] || []).map((a) => h("button", { type: "button", onclick: () => act(m, a), "aria-label": `${LABEL[a]} ${m.id}` }, LABEL[a])),
        h("button", { type: "button", class: "danger", onclick: () => act(m, "delete"), "aria-label": `Delete ${m.id}` }, "Delete")) : "" },
    ], list.messages, "The queue is empty."));
  };
  state.querySelector("select").addEventListener("change", () => load().catch((e) => put(status, e.message)));
  await load();
  add(view, h("h1", {}, "Mail queue"), status,
    h("section", { class: "card" }, state, h("button", { type: "button", onclick: () => load() }, "Refresh"), out));
}
