// #/jobs: the job list, newest first, filtered by status, one page at a time ("Load more"
// follows the API's next_cursor). #/jobs?limit=N sets the page size.

import { api } from "./api.js";
import { badge, compact, duration, fill, h, progressBar, shortId, when } from "./dom.js";

export const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];

export async function renderJobs(ctx) {
  const limit = Math.min(200, Math.max(1, Number(ctx.params.get("limit")) || 25));
  const boxes = STATUSES.map((s) => h("input", { type: "checkbox", name: "status", value: s, id: `status-${s}` }));
  const filter = h(
    "fieldset",
    { class: "filter" },
    h("legend", {}, "Show status"),
    h(
      "div",
      { class: "checks-row" },
      boxes.map((box, i) => h("label", { for: box.id }, box, STATUSES[i])),
    ),
  );
  const tbody = h("tbody");
  const table = h(
    "table",
    { id: "jobs-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Job", "Status", "Stage", "Progress", "Pruner", "Params after", "Created", "Took"].map((c) =>
          h("th", { scope: "col", class: c === "Params after" ? "num" : "" }, c),
        ),
      ),
    ),
    tbody,
  );
  const more = h("button", { type: "button", id: "load-more", hidden: true }, "Load more");
  const state = h("p", { class: "subtle", role: "status", "aria-live": "polite" });
  ctx.main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Jobs"),
      h("div", { class: "actions" }, h("a", { class: "button primary", href: "#/new" }, "New job")),
    ),
    h("section", { class: "card", "aria-label": "Job list" }, filter, h("div", { class: "table-wrap" }, table), h("div", { class: "row" }, more, state)),
  );

  let cursor = null;
  let generation = 0; // a filter change while a page loads discards that page

  async function load(reset) {
    const mine = reset ? ++generation : generation;
    const query = new URLSearchParams({ limit: String(limit) });
    for (const box of boxes) if (box.checked) query.append("status", box.value);
    if (!reset && cursor) query.set("cursor", cursor);
    more.disabled = true;
    state.textContent = "Loading…";
    try {
      const page = await api(`/v1/jobs?${query}`, { signal: ctx.signal });
      if (mine !== generation) return;
      if (reset) tbody.replaceChildren();
      for (const job of page.items) tbody.append(jobRow(job));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const shown = tbody.children.length;
      state.textContent = shown ? `${shown} job${shown === 1 ? "" : "s"} shown${cursor ? "; more on the server" : ""}` : "";
      if (!shown) {
        tbody.append(
          h(
            "tr",
            {},
            h("td", { colspan: 8, class: "empty" }, boxes.some((b) => b.checked) ? "No jobs with this status." : "No jobs yet. ", h("a", { href: "#/new" }, "Compress a model"), "."),
          ),
        );
      }
    } catch (error) {
      if (ctx.signal.aborted) return;
      state.textContent = "";
      fill(state, h("span", { class: "field-error", role: "alert" }, `Could not list jobs: ${error.message}`));
    } finally {
      more.disabled = false;
    }
  }

  for (const box of boxes) box.addEventListener("change", () => load(true));
  more.addEventListener("click", () => load(false));
  await load(true);
  followActiveRows(ctx, tbody);
}

const ACTIVE = new Set(["queued", "running", "cancelling"]);
const REFRESH_MS = 3000;

// Rows of unfinished jobs are refreshed in place, so the list shows progress without a reload: one
// request for all unfinished jobs per round (the API rate-limits per tenant), plus one per row that
// has left those statuses since, to show how it ended.
async function followActiveRows(ctx, tbody) {
  while (!ctx.signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
    const rows = new Map(
      [...tbody.querySelectorAll("tr[data-job-id]")].filter((r) => ACTIVE.has(r.dataset.status)).map((r) => [r.dataset.jobId, r]),
    );
    if (!rows.size) continue;
    try {
      const query = new URLSearchParams({ limit: "200" });
      for (const status of ACTIVE) query.append("status", status);
      const page = await api(`/v1/jobs?${query}`, { signal: ctx.signal });
      for (const job of page.items) {
        const row = rows.get(job.id);
        if (row) row.replaceWith(jobRow(job));
        rows.delete(job.id);
      }
      for (const id of [...rows.keys()].slice(0, 10)) {
        const row = rows.get(id);
        const job = await api(`/v1/jobs/${id}`, { signal: ctx.signal });
        if (row.isConnected) row.replaceWith(jobRow(job));
      }
    } catch {
      // the next round tries again (after a 429 too: a round is seconds apart)
    }
  }
}

function jobRow(job) {
  const after = job.metrics?.after?.params;
  const before = job.metrics?.before?.params;
  return h(
    "tr",
    { "data-job-id": job.id, "data-status": job.status },
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono", "aria-label": `Job ${job.id}` }, shortId(job.id))),
    h("td", {}, badge(job.status)),
    h("td", {}, ["running", "cancelling"].includes(job.status) ? job.stage || "starting" : "–"),
    h("td", {}, progressBar(job.progress, job.status, { small: true, label: `Progress of job ${shortId(job.id)}` }), ` ${Math.round(job.progress)}%`),
    h("td", {}, job.spec?.pruner || "–"),
    h("td", { class: "num" }, after !== undefined ? `${compact(after)}${before ? ` (${((after / before) * 100).toFixed(0)}%)` : ""}` : "–"),
    h("td", {}, when(job.created_at)),
    h("td", {}, job.started_at ? duration(job.started_at, job.finished_at) : "–"),
  );
}
