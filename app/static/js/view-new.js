// #/new: upload a model, compose a job (pruner, config_list, options), see the server's preflight
// of the config on that model, and submit. Errors from the server (422 problem details) are shown
// next to the field they name.

import { api, ApiError, idempotencyKey } from "./api.js";
import { bytes, fill, h } from "./dom.js";
import { clearError, field, parseConfigList, parseOptions, showError } from "./form-fields.js";
import { preflightView } from "./preflight-view.js";

// The engine's pruner registry (nncompress.pruners.PRUNERS); tests/app/test_dashboard_static.py
// fails when the two drift apart.
export const PRUNERS = [
  ["l1norm", "L1 norm of filters (structured)"],
  ["l2norm", "L2 norm of filters (structured)"],
  ["fpgm", "Geometric median of filters (structured)"],
  ["level", "Weight magnitude (unstructured, no speedup)"],
  ["slim", "BatchNorm scaling factors (needs data)"],
  ["taylorfo", "First-order Taylor importance (needs data)"],
  ["apoz", "Average percentage of zero activations (needs data)"],
  ["mean_activation", "Mean activation (needs data)"],
];
// The pruners whose class says needs_data (nncompress.pipeline.spec.DATA_DRIVEN_PRUNERS), checked
// by the same test.
const DATA_PRUNERS = new Set(["slim", "taylorfo", "apoz", "mean_activation"]);
// nncompress.pipeline.BUILTIN_DATASETS, checked by the same test.
export const DATASETS = ["mnist_subset"];

const EXAMPLE_CONFIG = `[
  {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
  {"exclude": true, "op_names": ["fc2"]}
]`;

// Remembered across visits to this view in the tab, so "New job" after a job keeps the model.
const draft = { model: null, config: EXAMPLE_CONFIG, pruner: "l1norm", options: "" };

// The job request's own fields, from the server's OpenAPI document, so that "more settings" put
// e.g. `finetune` where this server expects it (a request field, or an engine option on older
// servers) without the page hard-coding either.
let requestFields = null;
async function jobRequestFields() {
  if (!requestFields) {
    try {
      const response = await fetch("/openapi.json");
      const doc = await response.json();
      requestFields = new Set(Object.keys(doc.components.schemas.JobIn.properties));
    } catch {
      requestFields = new Set(["model_id", "pruner", "config_list", "speedup", "device", "input_shape", "export_onnx", "verify", "options"]);
    }
  }
  return requestFields;
}

export async function renderNew(ctx) {
  const { main, signal } = ctx;
  let architectures = [];
  try {
    architectures = (await api("/v1/architectures", { signal })).items;
  } catch (error) {
    if (signal.aborted) return;
    main.append(h("p", { class: "notice warn" }, `The architecture list is unavailable (${error.message}); ONNX uploads still work.`));
  }

  // ---- Step 1: the model -------------------------------------------------------------------
  const fileInput = h("input", { id: "model-file", type: "file", name: "file", accept: ".safetensors,.pt,.pth,.bin,.onnx" });
  const archSelect = h(
    "select",
    { id: "architecture", name: "architecture" },
    h("option", { value: "" }, "None: the file is ONNX"),
    architectures.map((a) => h("option", { value: a.name }, `${a.name} — ${a.description}`)),
  );
  if (architectures.some((a) => a.name === "mnist_net")) archSelect.value = "mnist_net";
  const archInfo = h("span");
  const fFile = field("model-file", "Model file", fileInput, "safetensors or a weights-only state_dict for a registry architecture, or an ONNX file");
  const fArch = field("architecture", "Architecture", archSelect);
  fArch.el.insertBefore(h("div", { class: "hint", id: "architecture-hint" }, archInfo), fArch.error);
  archSelect.setAttribute("aria-describedby", "architecture-hint architecture-error");
  const describeArch = () => {
    const a = architectures.find((x) => x.name === archSelect.value);
    archInfo.textContent = a
      ? `Input ${a.input_dtype} [${a.input_shape.join(", ")}]${a.num_classes ? `, ${a.num_classes} classes` : ""}`
      : "The layers come from the ONNX graph.";
  };
  archSelect.addEventListener("change", describeArch);
  describeArch();
  const uploadButton = h("button", { type: "submit", class: "primary", id: "upload" }, "Upload model");
  const uploadState = h("div", { role: "status", "aria-live": "polite", class: "subtle" });
  const modelSummary = h("div", { id: "model-summary" });
  const uploadForm = h(
    "form",
    { "aria-labelledby": "step-model" },
    h("div", { class: "row" }, fFile.el, fArch.el),
    h("div", { class: "actions-row" }, uploadButton, uploadState),
  );

  // ---- Step 2: the job ---------------------------------------------------------------------
  const prunerSelect = h(
    "select",
    { id: "pruner", name: "pruner" },
    PRUNERS.map(([name, text]) => h("option", { value: name }, `${name} — ${text}`)),
  );
  prunerSelect.value = draft.pruner;
  const configText = h("textarea", { id: "config-list", name: "config_list", spellcheck: "false", rows: 8 });
  configText.value = draft.config;
  const deviceSelect = h("select", { id: "device", name: "device" }, ["cpu", "cuda", "auto"].map((d) => h("option", { value: d }, d)));
  // Uploaded data sets (POST /v1/datasets) where the server has them; built-in ones always.
  let uploaded = [];
  try {
    uploaded = (await api("/v1/datasets?limit=100", { signal })).items;
  } catch (error) {
    if (signal.aborted) return;
  }
  const datasetSelect = h(
    "select",
    { id: "dataset", name: "dataset" },
    h("option", { value: "" }, "None"),
    h("optgroup", { label: "Built in" }, DATASETS.map((d) => h("option", { value: d }, d))),
    uploaded.length
      ? h(
          "optgroup",
          { label: "Uploaded" },
          uploaded.map((d) =>
            h(
              "option",
              { value: `upload:${d.id}` },
              `${d.files?.file?.filename || d.id.slice(0, 8)} — ${d.samples} samples, ${d.num_classes} classes, [${d.sample_shape.join("×")}]`,
            ),
          ),
        )
      : null,
  );
  const fPruner = field("pruner", "Pruner", prunerSelect);
  const fConfig = field(
    "config-list",
    "config_list (JSON)",
    configText,
    "NNI-style entries: sparse_ratio / sparsity_per_layer, op_types, op_names, exclude … Later entries override earlier ones.",
  );
  const configOk = h("div", { class: "field-ok", id: "config-ok", "aria-live": "polite" });
  fConfig.el.append(configOk);
  const fDevice = field("device", "Device", deviceSelect);
  const fDataset = field("dataset", "Data set", datasetSelect, "Measures top-1 accuracy before and after; data-driven pruners need one.");
  const optionsText = h("textarea", { id: "options", name: "options", spellcheck: "false", rows: 2, class: "short" });
  optionsText.value = draft.options;
  const fOptions = field(
    "options",
    "More settings (JSON object, optional)",
    optionsText,
    'e.g. {"finetune": {"epochs": 3}, "latency_runs": 50, "seed": 0}: fields of the job request go on the request, the rest into its options.',
  );
  const toggles = {
    speedup: h("input", { type: "checkbox", id: "opt-speedup", checked: true }),
    verify: h("input", { type: "checkbox", id: "opt-verify", checked: true }),
    export_onnx: h("input", { type: "checkbox", id: "opt-onnx", checked: true }),
  };
  const toggleRow = h(
    "div",
    { class: "checks-row" },
    h("label", { for: "opt-speedup" }, toggles.speedup, "Speed up (shrink the layers)"),
    h("label", { for: "opt-verify" }, toggles.verify, "Verify outputs"),
    h("label", { for: "opt-onnx" }, toggles.export_onnx, "Export ONNX"),
  );
  const preflightButton = h("button", { type: "button", id: "preflight" }, "Check against the model");
  const submitButton = h("button", { type: "submit", class: "primary", id: "submit-job" }, "Start compression");
  const formError = h("div", { class: "field-error", role: "alert", id: "job-error" });
  const preflightOut = h("section", { id: "preflight-result", "aria-live": "polite", "aria-label": "Preflight" });
  const jobForm = h(
    "form",
    { "aria-labelledby": "step-job" },
    h("div", { class: "row" }, fPruner.el, fDevice.el, fDataset.el),
    fConfig.el,
    fOptions.el,
    toggleRow,
    preflightOut,
    h("div", { class: "actions-row" }, preflightButton, submitButton),
    formError,
  );

  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "New compression job")),
    h(
      "section",
      { class: "card" },
      h("h2", { id: "step-model", class: "step-title" }, h("span", { class: "step-no", "aria-hidden": "true" }, "1"), "Model"),
      uploadForm,
      modelSummary,
    ),
    h(
      "section",
      { class: "card" },
      h("h2", { id: "step-job", class: "step-title" }, h("span", { class: "step-no", "aria-hidden": "true" }, "2"), "Compression"),
      jobForm,
    ),
  );

  function showModel(model) {
    draft.model = model;
    fill(
      modelSummary,
      h(
        "dl",
        { class: "facts", id: "model-facts" },
        h("dt", {}, "Model id"), h("dd", { class: "mono", "data-field": "model-id" }, model.id),
        h("dt", {}, "File"), h("dd", {}, `${model.filename} · ${bytes(model.size_bytes)} · ${model.format}`),
        h("dt", {}, "Architecture"), h("dd", {}, model.architecture || "from ONNX"),
        h("dt", {}, "sha256"), h("dd", { class: "sha" }, model.sha256),
      ),
    );
    updateButtons();
  }

  function updateButtons() {
    const [config] = parseConfigList(configText.value);
    const [options] = parseOptions(optionsText.value);
    const ready = Boolean(draft.model) && config !== null && options !== null;
    submitButton.disabled = !ready;
    preflightButton.disabled = !ready;
    submitButton.title = draft.model ? "" : "Upload a model first";
  }

  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError(fFile);
    clearError(fArch);
    const file = fileInput.files[0];
    if (!file) {
      showError(fFile, "Choose a file to upload.");
      return;
    }
    const body = new FormData();
    if (archSelect.value) body.append("architecture", archSelect.value);
    body.append("file", file, file.name);
    uploadButton.disabled = true;
    uploadState.textContent = `Uploading ${file.name} (${bytes(file.size)})…`;
    try {
      const model = await api("/v1/models", { method: "POST", body, signal });
      uploadState.textContent = "Uploaded.";
      showModel(model);
      schedulePreflight(0);
    } catch (error) {
      if (signal.aborted) return;
      uploadState.textContent = "";
      const target = JSON.stringify(error.problem?.errors || []).includes("architecture") ? fArch : fFile;
      showError(target, error.message, error instanceof ApiError ? `${error.status} ${error.code}` : null);
    } finally {
      uploadButton.disabled = false;
    }
  });

  // ---- config_list: validate while typing, preflight when it parses ------------------------
  let timer = null;
  let preflightSeq = 0;

  function checkConfigText() {
    draft.config = configText.value;
    const [config, message] = parseConfigList(configText.value);
    if (message) {
      showError(fConfig, message);
      configOk.textContent = "";
    } else {
      clearError(fConfig);
      configOk.textContent = `Valid JSON: ${config.length} entr${config.length === 1 ? "y" : "ies"}.`;
    }
    updateButtons();
    return config;
  }

  function schedulePreflight(delay = 600) {
    clearTimeout(timer);
    // A preflight still in flight answers for text that is no longer there: its reply must not
    // clear the error (or replace the table) that the newer text produced.
    preflightSeq += 1;
    if (!draft.model) return;
    timer = setTimeout(runPreflight, delay);
  }

  async function runPreflight() {
    const config = checkConfigText();
    if (!config || !draft.model) return;
    const seq = ++preflightSeq;
    fill(preflightOut, h("p", { class: "subtle" }, "Checking the config against the model…"));
    try {
      const report = await api(`/v1/models/${draft.model.id}/preflight`, {
        method: "POST",
        json: { config_list: config, pruner: prunerSelect.value },
        signal,
      });
      if (seq !== preflightSeq) return;
      clearError(fConfig);
      fill(preflightOut, preflightView(report));
    } catch (error) {
      if (signal.aborted || seq !== preflightSeq) return;
      preflightOut.replaceChildren();
      if (error instanceof ApiError && error.status === 409) {
        fill(preflightOut, h("p", { class: "notice warn" }, error.message));
      } else {
        showProblem(error);
      }
    }
  }

  // Puts each cause of a problem under the field it names: the engine's errors carry `key` (and
  // `entry` for a config_list entry), request validation errors carry `loc` (["body", field, …]).
  function showProblem(error) {
    const fields = { pruner: fPruner, device: fDevice, dataset: fDataset, dataset_id: fDataset, config_list: fConfig, options: fOptions };
    const code = error instanceof ApiError ? `${error.status} ${error.code}` : null;
    const entries = error.problem?.errors || [];
    let placed = false;
    for (const entry of entries) {
      const loc = Array.isArray(entry.loc) ? entry.loc.filter((part) => part !== "body") : [];
      const key = entry.key ?? entry.field?.split(".")[0] ?? loc[0] ?? null;
      let target = fields[key];
      if (!target) target = entry.entry !== undefined || key === null ? fConfig : fOptions;
      showError(target, entry.message || error.message, code);
      placed = true;
    }
    if (placed) return;
    if (error.status === 422) showError(fConfig, error.message, code);
    else fill(formError, code ? h("span", { class: "problem-type" }, code) : null, error.message);
  }

  function checkOptionsText() {
    draft.options = optionsText.value;
    const [options, message] = parseOptions(optionsText.value);
    if (message) showError(fOptions, message);
    else clearError(fOptions);
    updateButtons();
    return options;
  }
  optionsText.addEventListener("input", checkOptionsText);

  configText.addEventListener("input", () => {
    checkConfigText();
    schedulePreflight();
  });
  prunerSelect.addEventListener("change", () => {
    draft.pruner = prunerSelect.value;
    clearError(fPruner);
    if (DATA_PRUNERS.has(prunerSelect.value) && !datasetSelect.value && DATASETS.length) datasetSelect.value = DATASETS[0];
    schedulePreflight(0);
  });
  preflightButton.addEventListener("click", () => {
    clearTimeout(timer);
    runPreflight();
  });

  jobForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const config = checkConfigText();
    const options = checkOptionsText();
    if (!config || !options || !draft.model) return;
    for (const f of [fPruner, fDevice, fDataset]) clearError(f);
    formError.replaceChildren();
    const dataset = datasetSelect.value;
    if (dataset.startsWith("upload:")) options.dataset_id = dataset.slice("upload:".length);
    else if (dataset) options.dataset = dataset;
    const body = {
      model_id: draft.model.id,
      pruner: prunerSelect.value,
      config_list: config,
      device: deviceSelect.value,
      speedup: toggles.speedup.checked,
      verify: toggles.verify.checked,
      export_onnx: toggles.export_onnx.checked,
      options: {},
    };
    const fields = await jobRequestFields();
    for (const [key, value] of Object.entries(options)) {
      if (fields.has(key) && key !== "options" && key !== "model_id") body[key] = value;
      else body.options[key] = value;
    }
    submitButton.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body, extraHeaders: { "Idempotency-Key": idempotencyKey() }, signal });
      ctx.navigate(`#/jobs/${job.id}`);
    } catch (error) {
      if (signal.aborted) return;
      showProblem(error);
      updateButtons();
    }
  });

  if (draft.model) showModel(draft.model);
  checkConfigText();
  checkOptionsText();
  if (draft.model) schedulePreflight(0);
}
