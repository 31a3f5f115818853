// What the job page plots, read out of a job's JSON (GET /v1/jobs/{id}): pure functions, so the
// browser test can feed them a job as well.
//
// job.metrics = {before, after}: params, state_dict_bytes, macs, latency[{batch_size, median_ms}],
//               accuracy (when the job measured it on a data set).
// job.result  = the pipeline's report: layers[{name, type, in_before, in_after, out_before,
//               out_after}], timings, checks, notes; when the job fine-tuned or ran a pruning
//               schedule, also finetune (FinetuneResult.to_dict: epochs[{epoch, val_top1}]) or
//               schedule (ScheduledResult.to_dict: steps[{step, val: {top1}}], baseline).

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
 * The accuracy curve: {xLabel, series, baseline} or null when the job has none (a one-shot job
 * without fine-tuning has two accuracy numbers at most, which the bars show).
 */
export function accuracySeries(job) {
  const result = job.result || {};
  const original = typeof job.metrics?.before?.accuracy === "number" ? job.metrics.before.accuracy : null;
  const epochs = result.finetune?.epochs;
  if (Array.isArray(epochs) && epochs.length) {
    const points = epochs
      .filter((e) => typeof e.val_top1 === "number")
      .map((e) => ({ x: e.epoch, y: e.val_top1 }));
    const initial = result.finetune.initial?.top1;
    if (typeof initial === "number") points.unshift({ x: 0, y: initial });
    if (points.length >= 2) {
      return {
        xLabel: "fine-tuning epoch",
        series: [{ name: "validation top-1", points }],
        baseline: original !== null ? { name: "original", y: original } : null,
      };
    }
  }
  const schedule = result.schedule || result.scheduled;
  if (Array.isArray(schedule?.steps) && schedule.steps.length) {
    const points = schedule.steps
      .filter((s) => typeof s.val?.top1 === "number")
      .map((s) => ({ x: s.step, y: s.val.top1 }));
    const base = schedule.baseline?.top1 ?? original;
    if (points.length >= 1) {
      return {
        xLabel: "pruning step",
        series: [{ name: "top-1 after the step's fine-tuning", points }],
        baseline: typeof base === "number" ? { name: "original", y: base } : null,
      };
    }
  }
  return null;
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
