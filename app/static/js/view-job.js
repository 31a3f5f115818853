// #/jobs/<id>: one job, live. Progress follows the server-sent event stream (read with fetch so
// that it can carry the API key, resumed with Last-Event-ID after a dropped connection) and falls
// back to polling when streaming does not work. Once measured, the results are plotted.

import { api, streamEvents } from "./api.js";
import { badge, bytes, clock, duration, fill, h, progressBar, shortId, when } from "./dom.js";
import { resultSections } from "./job-results.js";
import { webhookCard } from "./webhook-view.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1500;

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

export async function renderJob(ctx, jobId) {
  const { main, signal } = ctx;
  let job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
  // The model's file name and architecture read better than its id; the page works without them.
  const model = await api(`/v1/models/${job.model_id}`, { signal }).catch(() => null);

  const title = h("h1", {}, "Job ", h("span", { class: "mono" }, shortId(job.id)));
  const statusSlot = h("span", { id: "job-status" });
  const cancelButton = h("button", { type: "button", class: "danger", id: "cancel-job" }, "Cancel job");
  const live = h("span", { class: "live", id: "live-mode", "aria-live": "polite" });
  const facts = h("dl", { class: "facts" });
  const progressSlot = h("div", { class: "progress-line" });
  const stages = h("ol", { class: "stages", "aria-label": "Stages" });
  const errorSlot = h("div");
  const results = h("div", { id: "results", class: "stack" });
  const eventList = h("ol", { class: "events", id: "events", "aria-label": "Events" });
  const seenStages = [];
  let shownResults = null; // what the results section was drawn from: redrawn only when it changes
  const webhook = job.webhook ? webhookCard(job, signal) : null;

  const sections = [
    h(
      "div",
      { class: "page-head" },
      title,
      statusSlot,
      live,
      h("div", { class: "actions" }, cancelButton, h("a", { class: "button", href: "#/new" }, "New job")),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "progress-title" },
      h("h2", { id: "progress-title" }, "Progress"),
      progressSlot,
      stages,
      errorSlot,
      h("div", { style: { marginTop: "1rem" } }, facts),
    ),
    results,
    webhook ? webhook.card : null,
    h("section", { class: "card", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), eventList),
  ];
  main.append(...sections.filter(Boolean)); // Element.append would print a null as "null"

  cancelButton.addEventListener("click", async () => {
    cancelButton.disabled = true;
    try {
      update(await api(`/v1/jobs/${job.id}/cancel`, { method: "POST", signal }));
    } catch (error) {
      fill(errorSlot, h("p", { class: "notice error", role: "alert" }, `Could not cancel: ${error.message}`));
      cancelButton.disabled = false;
    }
  });

  function update(next) {
    job = next;
    const finished = FINISHED.has(job.status);
    fill(statusSlot, badge(job.status));
    cancelButton.hidden = finished || job.status === "cancelling";
    fill(
      progressSlot,
      progressBar(job.progress, job.status, { label: "Job progress" }),
      h("span", { class: "progress-pct", id: "job-progress" }, `${Math.round(job.progress)}%`),
      h("span", { class: "subtle", id: "job-stage" }, job.status === "succeeded" ? "all stages done" : job.stage ? `stage: ${job.stage}` : "waiting for a worker"),
    );
    if (job.stage && !seenStages.includes(job.stage)) seenStages.push(job.stage);
    renderStages();
    fill(
      facts,
      h("dt", {}, "Job id"), h("dd", { class: "mono" }, job.id),
      h("dt", {}, "Model"),
      h(
        "dd",
        {},
        model ? `${model.filename} (${model.architecture || model.format}, ${bytes(model.size_bytes)}) · ` : "",
        h("span", { class: "mono" }, job.model_id),
      ),
      h("dt", {}, "Pruner"),
      h("dd", {}, job.spec.pruner ? `${job.spec.pruner} on ${job.device}${job.spec.speedup ? ", with speedup" : ""}` : `no pruning, on ${job.device}`),
      job.spec.finetune ? [h("dt", {}, "Fine-tuning"), h("dd", {}, `${job.spec.finetune.epochs} epoch(s), ${job.spec.finetune.optimizer} lr ${job.spec.finetune.lr}`)] : null,
      job.spec.schedule
        ? [h("dt", {}, "Schedule"), h("dd", {}, `${job.spec.schedule.kind}, ${job.spec.schedule.steps} steps${job.spec.schedule.accuracy_budget !== null && job.spec.schedule.accuracy_budget !== undefined ? `, accuracy budget ${job.spec.schedule.accuracy_budget} pt` : ""}`)]
        : null,
      job.spec.quantize ? [h("dt", {}, "Quantization"), h("dd", { class: "mono" }, JSON.stringify(job.spec.quantize))] : null,
      h("dt", {}, "config_list"), h("dd", { class: "mono" }, JSON.stringify(job.spec.config_list)),
      h("dt", {}, "Created"), h("dd", {}, when(job.created_at)),
      h("dt", {}, "Ran for"), h("dd", {}, job.started_at ? duration(job.started_at, job.finished_at) : "not started"),
      job.attempt > 1 ? [h("dt", {}, "Attempt"), h("dd", {}, `${job.attempt} of ${job.max_attempts}`)] : null,
    );
    fill(
      errorSlot,
      job.error
        ? h("div", { class: "notice error", role: "alert", style: { marginTop: "1rem" } }, h("strong", {}, job.error.type), ": ", job.error.message || "")
        : null,
    );
    // Stage metrics (accuracy per epoch or step) arrive while the job runs; the rest at the end.
    const drawnFrom = JSON.stringify([job.status, job.metrics, job.artifacts.length]);
    if (drawnFrom !== shownResults) {
      shownResults = drawnFrom;
      fill(results, ...resultSections(job));
    }
  }

  function renderStages() {
    const finished = job.status === "succeeded";
    // The engine's stage order comes with the job (job.stages); a job runs the stages it needs, so
    // only those seen are shown. A name the list lacks sorts last.
    const order = job.stages || [];
    const rank = (s) => (order.includes(s) ? order.indexOf(s) : order.length);
    seenStages.sort((a, b) => rank(a) - rank(b));
    fill(
      stages,
      seenStages.map((s) =>
        h("li", { class: s === job.stage && !finished ? "current" : "done", "aria-current": s === job.stage && !finished ? "step" : null }, s),
      ),
    );
  }

  function addEvent(event) {
    if (event.stage && !seenStages.includes(event.stage)) seenStages.push(event.stage);
    eventList.append(
      h(
        "li",
        { "data-type": event.type },
        h("time", { datetime: event.at }, clock(event.at)),
        h("strong", {}, event.type),
        h("span", {}, [event.stage, event.message].filter(Boolean).join(" · ") + (event.progress !== null && event.progress !== undefined ? ` (${Math.round(event.progress)}%)` : "")),
      ),
    );
    eventList.scrollTop = eventList.scrollHeight;
  }

  // One GET of the job per burst of events.
  let refreshing = null;
  function refreshSoon() {
    if (refreshing) return refreshing;
    refreshing = sleep(250, signal)
      .then(() => api(`/v1/jobs/${job.id}`, { signal }))
      .then((next) => {
        if (!signal.aborted) update(next);
        return next;
      })
      // A failed refresh (or one cut short by leaving the page) is retried by the next event.
      .catch(() => null)
      .finally(() => {
        refreshing = null;
      });
    return refreshing;
  }

  function setLive(mode) {
    live.className = mode ? "live on" : "live";
    live.textContent = mode === "stream" ? "live (event stream)" : mode === "poll" ? "live (polling)" : "finished";
    live.dataset.mode = mode || "done";
  }

  let lastEventId = null;

  async function followStream() {
    let failures = 0;
    while (!signal.aborted) {
      try {
        await streamEvents(`/v1/jobs/${job.id}/events/stream`, {
          lastEventId,
          signal,
          onOpen: () => setLive("stream"),
          onEvent: (e) => {
            lastEventId = Number(e.id);
            addEvent(JSON.parse(e.data));
            refreshSoon();
          },
        });
        failures = 0;
        // The server ends the stream once the job has finished; a proxy may end it earlier.
        const next = await api(`/v1/jobs/${job.id}`, { signal });
        update(next);
        if (FINISHED.has(next.status)) return true;
      } catch (error) {
        if (signal.aborted) return true;
        failures += 1;
        if (failures >= 3) return false;
        await sleep(1000 * failures, signal);
      }
    }
    return true;
  }

  async function poll() {
    setLive("poll");
    while (!signal.aborted) {
      try {
        const page = await api(`/v1/jobs/${job.id}/events?limit=1000${lastEventId !== null ? `&after=${lastEventId}` : ""}`, { signal });
        for (const e of page.items) addEvent(e);
        if (page.next_cursor !== null) lastEventId = page.next_cursor;
        update(await api(`/v1/jobs/${job.id}`, { signal }));
        if (FINISHED.has(job.status)) return;
      } catch {
        if (signal.aborted) return;
      }
      await sleep(POLL_MS, signal);
    }
  }

  update(job);
  setLive(FINISHED.has(job.status) ? null : "stream");
  webhook?.refresh();
  if (!(await followStream()) && !signal.aborted) await poll();
  if (!signal.aborted) setLive(null);
  if (webhook) await followDeliveries(webhook, job, signal);
}

// Deliveries happen after the job's events, from the server's webhook sender: re-read them for a
// while after the job ends, until the final event's message was delivered.
async function followDeliveries(webhook, job, signal) {
  for (let round = 0; round < 30 && !signal.aborted; round += 1) {
    const items = await webhook.refresh();
    if (items?.some((d) => d.event === job.status && d.delivered_at)) return;
    if (items && !job.webhook.events.includes(job.status)) return;
    await sleep(2000, signal);
  }
}
