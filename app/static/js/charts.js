// Plots as inline SVG, drawn here (the dashboard loads no chart library): paired bars for
// before/after comparisons and a line chart for accuracy over epochs or pruning steps.
// Every chart carries a <title> and a data table for screen readers and for copying numbers.

import { h, svg } from "./dom.js";

const WIDTH = 560; // about the width of a half-page card at 1280 px, so text draws near 1:1

function chartRoot(height, title, description, width = WIDTH) {
  const id = `chart-${Math.random().toString(36).slice(2, 9)}`;
  return svg(
    "svg",
    {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": `${id}-t ${id}-d`,
      preserveAspectRatio: "xMinYMin meet",
    },
    svg("title", { id: `${id}-t` }, title),
    svg("desc", { id: `${id}-d` }, description),
  );
}

/** Truncates a label to fit a column of `chars` characters (the full text stays in a <title>). */
function clip(text, chars) {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
}

/**
 * Horizontal grouped bars, one row per item, the "before" bar above the "after" bar. Each row is
 * scaled to its own largest value, so rows with different units (bytes, MACs, ms) or sizes
 * (20 vs 500 channels) are all readable; the numbers are printed at the bar ends.
 *
 * rows: [{label, sublabel?, before, after, format(v), lowerIsBetter?, ratioText?}]
 * Returns a figure element with legend, SVG and a data table.
 */
export function pairedBars({ title, description, rows, beforeName = "before", afterName = "after", showRatio = true }) {
  const labelW = 128;
  const ratioW = showRatio ? 52 : 0;
  const valueW = 76;
  const barH = 14;
  const rowGap = 14;
  const rowH = barH * 2 + 3 + rowGap;
  const top = 6;
  const height = top + rows.length * rowH;
  const plotW = WIDTH - labelW - valueW - ratioW;
  const root = chartRoot(height, title, description);

  rows.forEach((row, i) => {
    const y = top + i * rowH;
    const max = Math.max(row.before || 0, row.after || 0) || 1;
    const g = svg("g", { class: "row", "data-label": row.label });
    g.append(svg("title", {}, `${row.label}: ${row.format(row.before)} → ${row.format(row.after)}`));
    g.append(
      svg("text", { x: 0, y: y + barH + 1, class: "row-label", "dominant-baseline": "middle" }, clip(row.label, 18)),
    );
    if (row.sublabel) {
      g.append(svg("text", { x: 0, y: y + barH * 2, class: "tick", "dominant-baseline": "hanging" }, clip(row.sublabel, 22)));
    }
    [
      ["before", row.before, y],
      ["after", row.after, y + barH + 3],
    ].forEach(([kind, value, by]) => {
      const w = value ? Math.max(2, (value / max) * plotW) : 0;
      g.append(svg("rect", { class: `bar ${kind}`, x: labelW, y: by, width: w, height: barH, rx: 2 }));
      g.append(
        svg(
          "text",
          { class: "value", x: labelW + w + 6, y: by + barH / 2 + 0.5, "dominant-baseline": "middle" },
          row.format(value),
        ),
      );
    });
    if (showRatio && row.before && row.after !== null && row.after !== undefined) {
      const r = row.after / row.before;
      const better = row.lowerIsBetter === false ? r > 1.001 : r < 0.999;
      const worse = row.lowerIsBetter === false ? r < 0.999 : r > 1.001;
      const cls = better ? "good" : worse ? "bad" : "same";
      g.append(
        svg(
          "text",
          { class: `ratio ${cls}`, x: WIDTH - 2, y: y + barH + 1, "text-anchor": "end", "dominant-baseline": "middle" },
          row.ratioText || `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`,
        ),
      );
    }
    root.append(g);
  });

  const legend = h(
    "div",
    { class: "legend", "aria-hidden": "true" },
    h("span", { class: "before" }, beforeName),
    h("span", { class: "after" }, afterName),
    showRatio ? h("span", { class: "ratio-note" }, "× = after ÷ before") : null,
  );
  const table = dataTable(
    ["", beforeName, afterName, ...(showRatio ? ["after ÷ before"] : [])],
    rows.map((r) => [
      r.label + (r.sublabel ? ` (${r.sublabel})` : ""),
      r.format(r.before),
      r.format(r.after),
      ...(showRatio ? [r.before && r.after !== null ? (r.after / r.before).toFixed(3) : "–"] : []),
    ]),
  );
  return h("figure", { class: "figure" }, legend, root, table);
}

/**
 * A line chart: series [{name, points: [{x, y}]}] on shared axes; x are integers (epoch, step).
 * `baseline` draws a dashed horizontal reference (the original model's accuracy).
 */
export function lineChart({ title, description, series, xLabel, yLabel, yFormat, baseline = null, width = 1100 }) {
  // Drawn for a full-width card (about 1100 px at 1280), so its text renders near 1:1.
  const height = 280;
  const left = 64;
  const right = 16;
  const top = 14;
  const bottom = 44;
  const root = chartRoot(height, title, description, width);
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y).concat(baseline ? [baseline.y] : []);
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const lo = Math.min(...ys);
  const hi = Math.max(...ys);
  const pad = (hi - lo) * 0.15 || Math.max(Math.abs(hi) * 0.02, 0.005);
  // Round ticks (1, 2 or 5 × 10^k apart) that enclose the data with a little room.
  const yStep = niceStep((hi - lo + 2 * pad) / 5);
  const yMin = Math.floor((lo - pad) / yStep) * yStep;
  const yMax = Math.ceil((hi + pad) / yStep) * yStep;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const sx = (x) => left + (xMax === xMin ? plotW / 2 : ((x - xMin) / (xMax - xMin)) * plotW);
  const sy = (y) => top + plotH - ((y - yMin) / (yMax - yMin)) * plotH;

  for (let v = yMin; v <= yMax + yStep / 2; v += yStep) {
    root.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: sy(v), y2: sy(v) }));
    root.append(svg("text", { class: "tick", x: left - 6, y: sy(v), "text-anchor": "end", "dominant-baseline": "middle" }, yFormat(v)));
  }
  const xStep = Math.max(1, Math.ceil((xMax - xMin + 1) / 12));
  for (let x = xMin; x <= xMax; x += xStep) {
    root.append(svg("text", { class: "tick", x: sx(x), y: top + plotH + 16, "text-anchor": "middle" }, String(x)));
  }
  root.append(svg("text", { class: "axis-label", x: left + plotW / 2, y: height - 4, "text-anchor": "middle" }, xLabel));
  root.append(
    svg("text", { class: "axis-label", x: 12, y: top + plotH / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${top + plotH / 2})` }, yLabel),
  );
  if (baseline) {
    root.append(svg("line", { class: "baseline", x1: left, x2: width - right, y1: sy(baseline.y), y2: sy(baseline.y) }));
    root.append(svg("text", { class: "tick", x: width - right, y: sy(baseline.y) - 5, "text-anchor": "end" }, `${baseline.name} ${yFormat(baseline.y)}`));
  }
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    root.append(svg("path", { class: `line series-${i}`, d, "data-series": s.name }));
    for (const p of s.points) {
      root.append(
        svg("circle", { class: `point series-${i}`, cx: sx(p.x), cy: sy(p.y), r: 3.5 }, svg("title", {}, `${s.name}, ${xLabel} ${p.x}: ${yFormat(p.y)}`)),
      );
    }
  });

  const legend = h(
    "div",
    { class: "legend", "aria-hidden": "true" },
    series.map((s, i) => h("span", { class: i === 0 ? "after" : `s${i}` }, s.name)),
  );
  const xsSorted = [...new Set(xs)].sort((a, b) => a - b);
  const table = dataTable(
    [xLabel, ...series.map((s) => s.name)],
    xsSorted.map((x) => [String(x), ...series.map((s) => {
      const p = s.points.find((q) => q.x === x);
      return p ? yFormat(p.y) : "–";
    })]),
  );
  return h("figure", { class: "figure" }, legend, root, table);
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function dataTable(head, rows) {
  return h(
    "details",
    { class: "data" },
    h("summary", {}, "Show the numbers"),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { class: i ? "num" : "", scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h(i ? "td" : "th", { class: i ? "num" : "", scope: i ? null : "row" }, c))))),
    ),
  );
}
