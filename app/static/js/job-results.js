// The results part of the job page, drawn from the job's JSON: headline numbers, the plots
// (channels per layer, size/compute/latency, accuracy curves), downloads, checks and stage times.

import { downloadArtifact } from "./api.js";
import { lineChart, pairedBars } from "./charts.js";
import { bytes, h, pct, ratio } from "./dom.js";
import { accuracyCharts, channelRows, headline, metricRows } from "./report.js";

export function resultSections(job) {
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
      (result.notes || []).map((n) => h("p", { class: "notice" }, n)),
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
