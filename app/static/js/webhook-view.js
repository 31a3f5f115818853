// The job's webhook, when it named one: where it goes, which events, and every delivery attempt
// the server recorded (status code or error, retries pending).

import { api } from "./api.js";
import { clock, fill, h } from "./dom.js";

/** A card that shows job.webhook and keeps its delivery table current; refresh() re-reads it. */
export function webhookCard(job, signal) {
  const table = h("tbody");
  const state = h("p", { class: "subtle", role: "status" });
  const card = h(
    "section",
    { class: "card", id: "webhook", "aria-labelledby": "webhook-title" },
    h("h2", { id: "webhook-title" }, "Webhook"),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "URL"), h("dd", { class: "mono" }, job.webhook.url),
      h("dt", {}, "Events"), h("dd", {}, job.webhook.events.join(", ")),
    ),
    h(
      "div",
      { class: "table-wrap", style: { marginTop: "0.75rem" } },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["Event", "Attempt", "At", "Outcome"].map((c) => h("th", { scope: "col" }, c)))),
        table,
      ),
    ),
    state,
  );

  async function refresh() {
    try {
      const page = await api(`/v1/jobs/${job.id}/webhook-deliveries`, { signal });
      fill(table, page.items.map(deliveryRow));
      state.textContent = page.items.length ? "" : "No delivery yet.";
      return page.items;
    } catch (error) {
      if (!signal.aborted) state.textContent = `Deliveries unavailable: ${error.message}`;
      return null;
    }
  }
  return { card, refresh };
}

function deliveryRow(d) {
  const outcome = d.delivered_at
    ? h("span", { class: "badge succeeded" }, `delivered · ${d.status_code}`)
    : d.at === null
      ? h("span", { class: "badge queued" }, `retry at ${clock(d.next_attempt_at)}`)
      : h("span", { class: "badge failed" }, d.status_code ? `HTTP ${d.status_code}` : d.error || "failed");
  return h(
    "tr",
    { "data-event": d.event, "data-delivered": d.delivered_at ? "true" : "false" },
    h("th", { scope: "row" }, d.event),
    h("td", {}, String(d.attempt)),
    h("td", {}, d.at ? clock(d.at) : "–"),
    h("td", {}, outcome, d.error && d.status_code ? h("span", { class: "subtle" }, ` ${d.error}`) : null),
  );
}
