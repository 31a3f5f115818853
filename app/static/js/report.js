// What the job page plots, read out of a job's JSON (GET /v1/jobs/{id}): pure functions, so the
// browser test can feed them a job as well.
//
// job.metrics = {before, after}: params, state_dict_bytes, macs, latency[{batch_size, median_ms}],
//               accuracy (when the job measured it on a data set).
//               finetune / schedule: the data-driven stages' records (see accuracyCharts).
// job.result  = the pipeline's report: layers[{name, type, in_before, in_after, out_before,
//               out_after}], timings, checks, notes.

import { bytes, compact, ms, pct } from "./dom.js";

// Norm layers follow the channels of the conv or linear before them; plotting them too would
// show every cut twice.
const FOLLOWER_TYPES = /Norm/;

/** Rows of the "channels kept per layer" chart: output channels before/after per weighted layer. */
export function channelRows(job) {
  const layers = job.result?.layers || [];
  return layers
    .filter((l) => l.out_before !== null && l.out_before !== undefined && !FOLLOWER_TYPES.test(l.type))
    .map((l) => ({
      label: l.name,
      sublabel:
        l.in_before !== null && l.in_before !== undefined && l.in_before !== l.in_after
          ? `${l.type}, in ${l.in_before}→${l.in_after}`
          : l.type,
      before: l.out_before,
      after: l.out_after,
      format: (v) => (v === null || v === undefined ? "–" : String(v)),
    }));
}

/** Rows of the "size, compute and latency" chart. */
export function metricRows(job) {
  const before = job.metrics?.before;
  const after = job.metrics?.after;
  if (!before || !after) return [];
  const rows = [
    { label: "Parameters", key: "params", format: compact },
    { label: "Weights size", key: "state_dict_bytes", format: bytes },
    { label: "MACs", key: "macs", format: compact, sublabel: "per example" },
  ]
    .filter((r) => typeof before[r.key] === "number" && typeof after[r.key] === "number")
    .map((r) => ({ ...r, before: before[r.key], after: after[r.key] }));
  for (const lb of before.latency || []) {
    const la = (after.latency || []).find((x) => x.batch_size === lb.batch_size);
    if (!la) continue;
    rows.push({
      label: `Latency, batch ${lb.batch_size}`,
      sublabel: `median, ${before.device || ""} ${before.dtype || ""}`.trim(),
      before: lb.median_ms,
      after: la.median_ms,
      format: ms,
    });
  }
  if (typeof before.accuracy === "number" && typeof after.accuracy === "number") {
    rows.push({
      label: "Accuracy",
      sublabel: "top-1",
      before: before.accuracy,
      after: after.accuracy,
      format: (v) => pct(v, 1),
      lowerIsBetter: false,
      // A ratio of two accuracies says little; the change in percentage points is what people quote.
      ratioText: pointsDelta(before.accuracy, after.accuracy),
    });
  }
  return rows;
}

/**
 * The accuracy curves of a job, [{id, title, xLabel, series, baseline}], empty when it has none (a
 * one-shot job without fine-tuning has two accuracy numbers at most, which the bars show).
 *
 * The pipeline publishes them in job.metrics while the job runs (so the curve grows epoch by
 * epoch): metrics.finetune = {original, pruned, finetuned: {top1…}, epochs: [{epoch, val_top1}]},
 * metrics.schedule = {baseline: {top1}, steps: [{step, val: {top1}}]}. The same records under
 * job.result (the engine's FinetuneResult/ScheduledResult.to_dict()) are read as well.
 */
export function accuracyCharts(job) {
  const m = job.metrics || {};
  const r = job.result || {};
  const top1 = (x) => (typeof x?.top1 === "number" ? x.top1 : null);
  const originalTop1 = top1(m.finetune?.original) ?? top1(m.schedule?.baseline) ?? (typeof m.before?.accuracy === "number" ? m.before.accuracy : null);
  const baseline = originalTop1 !== null ? { name: "original", y: originalTop1 } : null;
  const charts = [];

  const schedule = m.schedule || r.schedule || r.scheduled;
  const steps = (schedule?.steps || []).filter((s) => typeof s.val?.top1 === "number");
  if (steps.length) {
    charts.push({
      id: "schedule",
      title: "Accuracy per pruning step",
      xLabel: "pruning step",
      series: [{ name: "top-1 after the step's fine-tuning", points: steps.map((s) => ({ x: s.step, y: s.val.top1 })) }],
      baseline: top1(schedule.baseline) !== null ? { name: "original", y: top1(schedule.baseline) } : baseline,
    });
  }

  const ft = m.finetune || r.finetune;
  const epochs = (ft?.epochs || []).filter((e) => typeof e.val_top1 === "number");
  if (epochs.length) {
    const points = epochs.map((e) => ({ x: e.epoch, y: e.val_top1 }));
    // Epoch 0 is the pruned model before any fine-tuning (the engine calls it `pruned` or `initial`).
    const start = top1(ft.pruned) ?? top1(ft.initial);
    if (start !== null && !ft.scheduled) points.unshift({ x: 0, y: start });
    charts.push({
      id: "finetune",
      title: ft.scheduled ? `Accuracy per fine-tuning epoch (step ${ft.chosen_step})` : "Accuracy per fine-tuning epoch",
      xLabel: "fine-tuning epoch",
      series: [{ name: "validation top-1", points }],
      baseline,
    });
  }
  return charts;
}

/** after − before in percentage points: "+0.3 pt". */
export function pointsDelta(before, after) {
  const d = (after - before) * 100;
  return `${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(1)} pt`;
}

/** Headline numbers: params and size kept, MACs, and the batch-1 latency ratio. */
export function headline(job) {
  const before = job.metrics?.before;
  const after = job.metrics?.after;
  if (!before || !after) return [];
  const items = [];
  const add = (label, b, a, fmt) => {
    if (typeof b === "number" && typeof a === "number" && b) items.push({ label, before: b, after: a, fmt });
  };
  add("Parameters", before.params, after.params, compact);
  add("Weights size", before.state_dict_bytes, after.state_dict_bytes, bytes);
  add("MACs", before.macs, after.macs, compact);
  const lb = (before.latency || [])[before.latency?.length - 1];
  const la = lb && (after.latency || []).find((x) => x.batch_size === lb.batch_size);
  if (lb && la) add(`Latency (batch ${lb.batch_size})`, lb.median_ms, la.median_ms, ms);
  if (typeof before.accuracy === "number" && typeof after.accuracy === "number") {
    items.push({
      label: "Accuracy (top-1)",
      before: before.accuracy,
      after: after.accuracy,
      fmt: (v) => pct(v, 1),
      higherIsBetter: true,
      delta: pointsDelta(before.accuracy, after.accuracy),
    });
  }
  return items;
}
