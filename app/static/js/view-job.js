// #/jobs/<id>: one job, live. Progress follows the server-sent event stream (read with fetch so
// that it can carry the API key, resumed with Last-Event-ID after a dropped connection) and falls
// back to polling when streaming does not work. Once measured, the results are plotted.

import { api, downloadArtifact, streamEvents } from "./api.js";
import { pairedBars, lineChart } from "./charts.js";
import { badge, bytes, clock, duration, fill, h, pct, progressBar, ratio, shortId, when } from "./dom.js";
import { accuracyCharts, channelRows, headline, metricRows } from "./report.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
// The pipeline's stage order (design §6); a job runs the ones it needs, so only those seen are shown.
const STAGE_ORDER = ["loading", "pruning", "speedup", "verifying", "finetuning", "quantizing", "evaluating", "exporting"];
const stageRank = (s) => (STAGE_ORDER.includes(s) ? STAGE_ORDER.indexOf(s) : STAGE_ORDER.length);
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

  main.append(
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
    h("section", { class: "card", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), eventList),
  );

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
      h("dt", {}, "Pruner"), h("dd", {}, `${job.spec.pruner} on ${job.device}${job.spec.speedup ? ", with speedup" : ""}`),
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
    seenStages.sort((a, b) => stageRank(a) - stageRank(b));
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
  if (!(await followStream()) && !signal.aborted) await poll();
  if (!signal.aborted) setLive(null);
}

function resultSections(job) {
  const sections = [];
  const done = job.status === "succeeded";
  const stats = done ? headline(job) : [];
  if (stats.length) {
    sections.push(
      h(
        "section",
        { class: "card", "aria-labelledby": "summary-title" },
        h("h2", { id: "summary-title" }, "Result"),
        h(
          "div",
          { class: "headline" },
          stats.map((s) => {
            const worse = s.higherIsBetter ? s.after < s.before : s.after > s.before;
            return h(
              "div",
              { class: "stat" },
              h("div", { class: "label" }, s.label),
              h("div", { class: "value" }, s.fmt(s.after)),
              h("div", { class: `delta ${worse ? "bad" : ""}` }, s.delta ? `${s.delta} vs ${s.fmt(s.before)}` : `${ratio(s.before, s.after)} of ${s.fmt(s.before)}`),
            );
          }),
        ),
      ),
    );
  }

  const channels = done ? channelRows(job) : [];
  const metrics = done ? metricRows(job) : [];
  const charts = [];
  if (channels.length) {
    charts.push(
      h(
        "section",
        { class: "card", id: "chart-channels", "aria-labelledby": "channels-title" },
        h("h2", { id: "channels-title" }, "Channels kept per layer"),
        job.result?.speedup_applied === false
          ? h("p", { class: "notice warn" }, "Speedup was off: pruned weights are zeroed, not removed, so every layer keeps its shape.")
          : null,
        pairedBars({
          title: "Output channels per layer, before and after",
          description: channels.map((r) => `${r.label}: ${r.before} → ${r.after}`).join("; "),
          rows: channels,
          beforeName: "original",
          afterName: "compressed",
        }),
      ),
    );
  }
  if (metrics.length) {
    charts.push(
      h(
        "section",
        { class: "card", id: "chart-metrics", "aria-labelledby": "metrics-title" },
        h("h2", { id: "metrics-title" }, "Size, compute and latency"),
        pairedBars({
          title: "Measured before and after compression",
          description: metrics.map((r) => `${r.label}: ${r.format(r.before)} → ${r.format(r.after)}`).join("; "),
          rows: metrics,
          beforeName: "original",
          afterName: "compressed",
        }),
        h("p", { class: "subtle" }, `Measured by the worker (${job.metrics.after.latency_method || "latency"}, ${job.metrics.after.threads ?? "?"} threads); bars are scaled per row.`),
      ),
    );
  }
  if (charts.length) sections.push(h("div", { class: charts.length === 2 ? "grid-2" : "" }, charts));

  for (const acc of accuracyCharts(job)) {
    sections.push(
      h(
        "section",
        { class: "card", id: `chart-accuracy-${acc.id}`, "data-chart": "accuracy", "aria-labelledby": `accuracy-${acc.id}-title` },
        h("h2", { id: `accuracy-${acc.id}-title` }, acc.title),
        lineChart({
          title: `Top-1 accuracy per ${acc.xLabel}`,
          description: acc.series[0].points.map((p) => `${p.x}: ${pct(p.y, 1)}`).join("; "),
          series: acc.series,
          baseline: acc.baseline,
          xLabel: acc.xLabel,
          yLabel: "top-1",
          yFormat: (v) => pct(v, 1),
        }),
      ),
    );
  }

  if (job.artifacts.length) sections.push(artifactsCard(job));
  const side = done ? checksCard(job) : null;
  if (side) sections.push(side);
  return sections;
}

function artifactsCard(job) {
  return h(
    "section",
    { class: "card", id: "artifacts", "aria-labelledby": "artifacts-title" },
    h("h2", { id: "artifacts-title" }, "Downloads"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "File"), h("th", { scope: "col", class: "num" }, "Size"), h("th", { scope: "col" }, "sha256"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Download")))),
        h(
          "tbody",
          {},
          job.artifacts.map((a) => {
            const note = h("span", { class: "subtle", role: "status" });
            const button = h("button", { type: "button", class: "primary", "data-artifact": a.name, "aria-label": `Download ${a.name}` }, "Download");
            button.addEventListener("click", async () => {
              button.disabled = true;
              note.textContent = " downloading…";
              try {
                const { verified } = await downloadArtifact(a);
                note.textContent = verified === true ? " ✓ sha256 verified" : verified === false ? " ✗ sha256 mismatch" : " saved";
              } catch (error) {
                note.textContent = ` failed: ${error.message}`;
              } finally {
                button.disabled = false;
              }
            });
            return h(
              "tr",
              { "data-artifact-row": a.name },
              h("th", { scope: "row", class: "mono" }, a.name, h("div", { class: "subtle" }, a.media_type)),
              h("td", { class: "num" }, bytes(a.size_bytes)),
              h("td", { class: "sha", title: a.sha256, "data-sha256": a.sha256 }, `${a.sha256.slice(0, 16)}…`),
              h("td", {}, button, note),
            );
          }),
        ),
      ),
    ),
  );
}

function checksCard(job) {
  const result = job.result || {};
  const checks = result.checks || {};
  const items = [];
  const verification = checks.speedup?.verification;
  if (verification) {
    items.push([verification.passed, `Shrunk model matches the masked model (max |Δ| ${verification.max_abs_diff.toExponential(1)})`]);
  }
  if (checks.equivalence) items.push([true, `Outputs equal within tolerance (max |Δ| ${checks.equivalence.max_abs_diff.toExponential(1)})`]);
  if (checks.reload) items.push([true, `Artifacts reload onto ${checks.reload.architecture || "the architecture"} without pickle (max |Δ| ${checks.reload.max_abs_diff})`]);
  if (checks.onnx) items.push([true, `ONNX runs in onnxruntime (max |Δ| ${checks.onnx.max_abs_diff.toExponential(1)})`]);
  const timings = Object.entries(result.timings || {});
  const total = timings.reduce((s, [, v]) => s + v, 0);
  if (!items.length && !timings.length && !(result.notes || []).length) return null;
  return h(
    "div",
    { class: "grid-2" },
    h(
      "section",
      { class: "card", "aria-labelledby": "checks-title" },
      h("h2", { id: "checks-title" }, "Checks"),
      items.length
        ? h("ul", { class: "checks" }, items.map(([ok, text]) => h("li", {}, h("span", { class: ok ? "ok" : "no", "aria-label": ok ? "passed" : "failed" }, ok ? "✓ " : "✗ "), text)))
        : h("p", { class: "subtle" }, "No checks recorded."),
      (result.notes || []).map((n) => h("p", { class: "notice warn" }, n)),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "timings-title" },
      h("h2", { id: "timings-title" }, "Time per stage"),
      h(
        "table",
        { class: "timings" },
        h(
          "tbody",
          {},
          timings.map(([stage, seconds]) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, stage),
              h("td", { style: { width: "55%" } }, h("div", { class: "progress" }, h("span", { style: { width: `${total ? (seconds / total) * 100 : 0}%` } }))),
              h("td", { class: "num" }, `${seconds.toFixed(2)} s`),
            ),
          ),
        ),
      ),
    ),
  );
}
