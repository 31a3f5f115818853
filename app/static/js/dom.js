// Building DOM nodes and formatting numbers. Text always goes in as text nodes, never as HTML,
// so a layer name or a server message cannot inject markup.

/** h("button", {class: "primary", onclick: fn}, "Save") → an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** The SVG twin of h(): svg("rect", {x: 0, y: 0, width: 10, height: 5}). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style") {
      // CSSOM only: the page's CSP forbids style attributes written as markup.
      Object.assign(el.style, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const intFmt = new Intl.NumberFormat("en-US");

export function int(n) {
  return n === null || n === undefined ? "–" : intFmt.format(Math.round(n));
}

/** 1234567 → "1.2 M", for parameter and MAC counts. */
export function compact(n) {
  if (n === null || n === undefined) return "–";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(abs >= 1e10 ? 0 : 1)} G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(abs >= 1e7 ? 0 : 1)} M`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(abs >= 1e4 ? 0 : 1)} k`;
  return String(Math.round(n));
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function ms(n) {
  if (n === null || n === undefined) return "–";
  return n >= 100 ? `${n.toFixed(0)} ms` : n >= 10 ? `${n.toFixed(1)} ms` : `${n.toFixed(2)} ms`;
}

export function pct(fraction, digits = 0) {
  return fraction === null || fraction === undefined ? "–" : `${(fraction * 100).toFixed(digits)}%`;
}

/** after/before as "0.25×"; null when it cannot be computed. */
export function ratio(before, after) {
  if (!before || after === null || after === undefined) return null;
  const r = after / before;
  return `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`;
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString(undefined, { hour12: false }) : "";
}

/** Wall seconds between two ISO times, as "12.3 s" or "4 min 5 s". */
export function duration(startIso, endIso) {
  if (!startIso) return "–";
  const s = ((endIso ? new Date(endIso) : new Date()) - new Date(startIso)) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, status);
}

/** A progress bar for a job's progress, which the API gives in percent (0–100). */
export function progressBar(percent, status, { small = false, label = "Progress" } = {}) {
  const value = Math.max(0, Math.min(1, (percent || 0) / 100));
  return h(
    "div",
    {
      class: `progress ${status || ""} ${small ? "small" : ""}`,
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": Math.round(value * 100),
    },
    h("span", { style: { width: `${value * 100}%` } }),
  );
}
