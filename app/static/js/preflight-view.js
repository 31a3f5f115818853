// The server's preflight of a config_list on a model, as the job form shows it before submit:
// the layers that would be pruned (shape, sparsity, channels before → after), the coupled channel
// groups, the layers left alone, and unsupported ops.

import { h, pct } from "./dom.js";

export function preflightView(report) {
  const layers = report.layers || [];
  // Coupled: several layers whose output channels must be cut together (a residual add, a concat);
  // a single conv with its BatchNorm (carried_by) is the ordinary case and not listed.
  const groups = (report.groups || []).filter((g) => g.layers.length > 1 || !g.prunable);
  const coupled = new Set(groups.filter((g) => g.layers.length > 1).map((g) => g.id));
  return h(
    "div",
    {},
    h("h3", {}, `Preflight: ${layers.length} layer${layers.length === 1 ? "" : "s"} to prune with ${report.pruner}`),
    layers.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "preflight-table" },
            h(
              "thead",
              {},
              h("tr", {}, ["Layer", "Type", "Weight shape", "Sparsity", "Channels before → after", "Kept", "Group", "Entry"].map((c) =>
                h("th", { scope: "col", class: !["Layer", "Type", "Weight shape"].includes(c) ? "num" : "" }, c),
              )),
            ),
            h(
              "tbody",
              {},
              layers.map((l) =>
                h(
                  "tr",
                  { "data-layer": l.name },
                  h("th", { scope: "row", class: "mono" }, l.name),
                  h("td", {}, l.op_type),
                  h("td", { class: "mono" }, `[${(l.weight_shape || []).join(", ")}]`),
                  h("td", { class: "num" }, pct(l.sparse_ratio)),
                  h("td", { class: "num" }, l.channels !== null && l.channels !== undefined ? `${l.channels} → ${l.channels_after}` : l.granularity),
                  h("td", { class: "num" }, l.channels ? pct(l.channels_after / l.channels) : "–"),
                  h("td", { class: "num" }, l.group ?? "–", coupled.has(l.group) ? h("span", { class: "chip coupled", title: "shares its channels with other layers" }, "coupled") : null),
                  h("td", { class: "num" }, l.entry_index ?? "–"),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "notice warn" }, "No layer matches this config_list: the job would prune nothing."),
    groups.length
      ? h(
          "div",
          {},
          h("h3", {}, "Coupled channel groups"),
          h("p", { class: "subtle" }, "These layers share their channels (residual adds, concats, depthwise convs): one choice prunes them together."),
          h(
            "ul",
            { id: "preflight-groups" },
            groups.map((g) =>
              h(
                "li",
                { "data-group": g.id },
                `Group ${g.id}: `,
                h("span", { class: "mono" }, g.layers.join(", ")),
                g.carried_by.length ? ` (carried by ${g.carried_by.join(", ")})` : "",
                ` — ${g.channels} → ${g.channels_after} channels`,
                g.prunable ? "" : ` — not prunable: ${g.reason}`,
              ),
            ),
          ),
        )
      : null,
    report.not_selected?.length
      ? h("p", { class: "subtle" }, "Left as they are: ", h("span", { class: "inline-chips" }, report.not_selected.map((n) => h("span", { class: "chip" }, n))))
      : null,
    report.unsupported?.length ? h("p", { class: "notice warn" }, `Unsupported ops: ${report.unsupported.map((u) => (typeof u === "string" ? u : JSON.stringify(u))).join(", ")}`) : null,
    (report.warnings || []).map((w) => h("p", { class: "notice warn" }, typeof w === "string" ? w : JSON.stringify(w))),
  );
}
