// Form fields of the dashboard: a labelled control with its hint and an error slot that a
// client-side check or the server's 422 problem details fill, and the client-side JSON checks.

import { fill, h } from "./dom.js";

/** A labelled control with an optional hint; returns {el, error, control}. */
export function field(id, labelText, control, hint) {
  const error = h("div", { id: `${id}-error`, class: "field-error", role: "alert" });
  control.setAttribute("aria-describedby", [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" "));
  return {
    el: h("div", { class: "field" }, h("label", { for: id }, labelText), control, hint ? h("div", { id: `${id}-hint`, class: "hint" }, hint) : null, error),
    error,
    control,
  };
}

/** Marks the field invalid and shows the message (and the problem code, when the server gave one). */
export function showError(f, message, code) {
  f.control.setAttribute("aria-invalid", "true");
  f.el.querySelector(".field-ok")?.replaceChildren();
  fill(f.error, code ? h("span", { class: "problem-type" }, code) : null, message);
}

/** Marks the field valid again and empties its error slot. */
export function clearError(f) {
  f.control.removeAttribute("aria-invalid");
  f.error.replaceChildren();
}

/** Client-side check of the options text: empty, or a JSON object. Returns [value, message]. */
export function parseOptions(text) {
  if (!text.trim()) return [{}, null];
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return [null, `Not valid JSON: ${e.message}`];
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [null, 'Options must be a JSON object: {"key": value}'];
  return [value, null];
}

/** Client-side check of the config_list text: JSON, a list, of objects. Returns [value, message]. */
export function parseConfigList(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return [null, `Not valid JSON: ${e.message}`];
  }
  if (!Array.isArray(value)) return [null, "config_list must be a JSON list: [ {…}, {…} ]"];
  if (!value.length) return [null, "config_list is empty: add at least one entry"];
  const bad = value.findIndex((e) => e === null || typeof e !== "object" || Array.isArray(e));
  if (bad >= 0) return [null, `config_list[${bad}] must be an object like {"sparse_ratio": 0.5, "op_types": ["Conv2d"]}`];
  return [value, null];
}
