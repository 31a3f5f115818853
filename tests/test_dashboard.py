"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real server.

``nncompress serve`` runs as a child process, as a user starts it (SQLite, local storage, the embedded
dispatcher with its real worker and job child process). The browser uploads the shipped MNIST weights,
composes the seed's config_list, sees the server's preflight and its 422 problem details, submits,
follows the job to ``succeeded``, reads the plots and downloads the compressed weights. A full-page
screenshot of the job page is kept in ``test-artifacts/dashboard-job.png``.

Chromium missing is a failure, not a skip: ``scripts/install_browser.sh`` installs Debian's package (a
browser download by Playwright is not possible on the CI machines).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from examples.demo import embedded_server
from nncompress.client import Client
from nncompress.pipeline import STAGES

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "nncompress" / "data" / "mnist_net.safetensors"
SCREENSHOTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("NNCOMPRESS_TEST_CHROMIUM", "/usr/bin/chromium"))
# No network, no first-run or background services: the browser talks to the test server alone.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEED_CONFIG = (
    '[{"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]}, {"exclude": true, "op_names": ["fc2"]}]'
)
# A two-core CI machine running other tests runs this job in ~10 s; the deadline is generous.
JOB_DEADLINE_MS = 240_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    # The slow jobs below time 100,000 runs to stay running for minutes; the server's default ceiling
    # (NNCOMPRESS_MAX_LATENCY_RUNS, 1000) is lifted for them, as a deployment would set it.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NNCOMPRESS_MAX_LATENCY_RUNS", "100000")
        with embedded_server(tmp_path_factory.mktemp("dashboard-server")) as client:
            yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is required at {CHROMIUM}: run scripts/install_browser.sh (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    expect.set_options(timeout=30_000)  # as page waits: a loaded two-core CI machine is slow to paint
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh 1280×800 tab; uncaught script errors and CSP violations fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The browser enforces the dashboard's Content-Security-Policy; a violation (an inline style
    # written as markup, a script from elsewhere) is only reported on the console.
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.requests = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))  # type: ignore[attr-defined]
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _upload_model(page: Any, weights: Path = WEIGHTS, architecture: str = "mnist_net") -> None:
    """Uploads ``weights`` onto ``architecture`` through the new-job form and waits for the model's facts."""
    page.get_by_label("Model file").set_input_files(str(weights))
    page.get_by_label("Architecture").select_option(architecture)
    page.get_by_role("button", name="Upload model").click()
    page.wait_for_selector("#model-facts")


def test_upload_compose_watch_and_download(page: Any, server: Client, tmp_path: Path) -> None:
    t0 = time.monotonic()
    page.goto(f"{server.base_url}/ui/")
    page.wait_for_selector("#jobs-table")
    assert "no sign-in needed" in page.inner_text("#session")  # embedded on loopback runs open

    # Upload the shipped weights onto their registry architecture.
    page.get_by_role("link", name="New job").first.click()
    _upload_model(page)
    model_id = page.inner_text("[data-field=model-id]")
    model = server.get_model(model_id)
    assert model["sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert model["sha256"] in page.inner_text("#model-facts")

    config = page.get_by_label("config_list (JSON)")
    # Broken JSON is caught in the browser: no request, the submit button is disabled.
    config.fill('[{"sparsity_per_layer": 0.5,')
    assert "Not valid JSON" in page.inner_text("#config-list-error")
    assert config.get_attribute("aria-invalid") == "true"
    assert page.get_by_role("button", name="Start compression").is_disabled()

    # Valid JSON the engine refuses: the server's 422 problem details appear next to the field.
    config.fill('[{"sparsity_per_layer": 1.5, "op_types": ["Linear"]}]')
    page.wait_for_selector("#config-list-error:has-text('invalid_config')")
    assert "expected a number in [0, 1), got 1.5" in page.inner_text("#config-list-error")

    # The seed's config: the preflight table shows the layers and their channels before → after.
    config.fill(SEED_CONFIG)
    page.wait_for_selector("#preflight-table")
    assert config.get_attribute("aria-invalid") is None
    rows = {
        row.get_attribute("data-layer"): row.inner_text()
        for row in page.locator("#preflight-table tbody tr").all()
    }
    assert set(rows) == {"conv1", "conv2", "fc1"}  # fc2 is excluded
    assert "20 → 10" in rows["conv1"] and "50 → 25" in rows["conv2"] and "500 → 250" in rows["fc1"]
    assert "[20, 1, 5, 5]" in rows["conv1"]
    assert "fc2" in page.inner_text("#preflight-result")

    # More settings: an object is required in the browser; an unknown key is the server's 422,
    # shown under that field, and no job is created.
    jobs_before = server.list_jobs(limit=200)["items"]
    options = page.get_by_label("More settings (JSON object, optional)")
    options.fill("[1]")
    assert "must be a JSON object" in page.inner_text("#options-error")
    assert page.get_by_role("button", name="Start compression").is_disabled()
    options.fill('{"latency_runz": 3}')
    page.get_by_role("button", name="Start compression").click()
    page.wait_for_selector("#options-error:has-text('latency_runz')")
    assert "invalid_config" in page.inner_text("#options-error")
    assert server.list_jobs(limit=200)["items"] == jobs_before
    # A real fine-tuning run on the shipped MNIST subset, so the job page has an accuracy curve.
    page.get_by_label("Data set").select_option("mnist_subset")
    options.fill('{"latency_runs": 5, "finetune": {"epochs": 3}}')

    page.get_by_role("button", name="Start compression").click()
    page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[-1]

    # Live progress until the job succeeds (Playwright polls the page up to the deadline).
    page.wait_for_selector("#job-status [data-status=succeeded]", timeout=JOB_DEADLINE_MS)
    job = server.get_job(job_id)
    assert job["status"] == "succeeded"
    assert job["spec"]["config_list"] == json.loads(SEED_CONFIG)
    assert job["spec"]["latency_runs"] == 5 and job["spec"]["dataset"] == "mnist_subset"
    assert job["spec"]["finetune"]["epochs"] == 3
    assert page.inner_text("#job-progress") == "100%"
    page.wait_for_selector("#live-mode[data-mode=done]")
    event_types = [li.get_attribute("data-type") for li in page.locator("#events li").all()]
    assert event_types[0] == "created" and event_types[-1] == "succeeded" and "stage" in event_types
    # The stages the job ran, in the engine's order, which the page reads from the job (job.stages).
    shown = page.locator("ol.stages li").all_inner_texts()
    assert {"loading", "pruning", "finetuning", "exporting"} <= set(shown)
    assert shown == [stage for stage in STAGES if stage in shown]
    # The progress came from the event stream; the polling fallback was not needed.
    assert any("/events/stream" in url for url in page.requests)
    assert not any(re.search(r"/events\?", url) for url in page.requests)

    # Plots: two bars (original, compressed) per weighted layer, and per measured quantity.
    layers = job["result"]["layers"]
    channel_bars = page.locator("#chart-channels svg.chart rect.bar")
    assert channel_bars.count() == 2 * len(layers) == 8
    assert page.locator("#chart-channels rect.bar.after").count() == len(layers)
    conv1 = page.locator('#chart-channels g.row[data-label="conv1"]').text_content()
    assert "20" in conv1 and "10" in conv1 and "0.50×" in conv1
    # params, bytes, MACs, latency per batch size, accuracy
    metric_rows = 3 + len(job["metrics"]["before"]["latency"]) + 1
    assert page.locator("#chart-metrics svg.chart rect.bar").count() == 2 * metric_rows
    accuracy = page.locator('#chart-metrics g.row[data-label="Accuracy"]').text_content()
    assert f"{job['metrics']['after']['accuracy'] * 100:.1f}%" in accuracy
    params = page.locator('#chart-metrics g.row[data-label="Parameters"]').text_content()
    ratio = job["metrics"]["after"]["params"] / job["metrics"]["before"]["params"]
    assert f"{ratio:.2f}×" in params
    # The accuracy curve: the pruned model (epoch 0), then each fine-tuning epoch, and the original.
    assert page.locator("[data-chart=accuracy]").count() == 1
    curve = page.locator("#chart-accuracy-finetune svg.chart")
    assert curve.locator("circle.point").count() == 1 + len(job["metrics"]["finetune"]["epochs"]) == 4
    assert curve.locator("line.baseline").count() == 1

    # Every artifact has a download button with its size and sha256; the bytes match the job's hash.
    artifacts = {a["name"]: a for a in job["artifacts"]}
    assert {r.get_attribute("data-artifact-row") for r in page.locator("#artifacts tbody tr").all()} == set(
        artifacts
    )
    wanted = artifacts["model.safetensors"]
    row = page.locator('[data-artifact-row="model.safetensors"]')
    assert row.locator("[data-sha256]").get_attribute("data-sha256") == wanted["sha256"]
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download model.safetensors").click()
    download = download_info.value
    assert download.suggested_filename == "model.safetensors"
    saved = tmp_path / "model.safetensors"
    download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == wanted["sha256"]
    assert saved.stat().st_size == wanted["size_bytes"]
    assert "sha256 verified" in row.inner_text()  # the page checked the hash too

    assert "null" not in page.inner_text("main") and "undefined" not in page.inner_text("main")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard-job.png"), full_page=True)
    print(f"dashboard flow: {time.monotonic() - t0:.1f} s")


def test_job_list_filters_by_status_and_pages_with_the_cursor(page: Any, server: Client) -> None:
    model = server.upload_model(WEIGHTS, architecture="mnist_net")
    config = json.loads(SEED_CONFIG)
    # Cancelled at once: it ends cancelled whether or not a worker had claimed it yet.
    cancelled = server.create_job(model["id"], config_list=config)
    server.cancel(cancelled["id"])
    quick = server.create_job(
        model["id"], config_list=config, pruner="level", speedup=False, export_onnx=False, verify=False
    )
    for job in (cancelled, quick):
        server.wait(job["id"], deadline=JOB_DEADLINE_MS / 1000)
    assert server.get_job(cancelled["id"])["status"] == "cancelled"
    assert server.get_job(quick["id"])["status"] == "succeeded"
    newest_first = [j["id"] for j in server.list_jobs(limit=200)["items"]]

    page.goto(f"{server.base_url}/ui/#/jobs?limit=1")
    page.wait_for_selector("#jobs-table tbody tr[data-job-id]")
    shown = lambda: [r.get_attribute("data-job-id") for r in page.locator("#jobs-table tbody tr").all()]  # noqa: E731
    assert shown() == newest_first[:1]
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#jobs-table tbody tr[data-job-id]")).to_have_count(2)
    assert shown() == newest_first[:2]

    page.get_by_label("cancelled").check()
    expect(page.locator("#jobs-table tbody tr:not([data-status=cancelled])")).to_have_count(0)
    expect(page.locator("#jobs-table tbody tr[data-status=cancelled]")).to_have_count(1)
    assert shown() == [cancelled["id"]]
    assert page.get_by_role("button", name="Load more").is_hidden()
    page.get_by_label("cancelled").uncheck()
    page.get_by_label("failed").check()
    page.wait_for_selector("#jobs-table td.empty")
    assert "No jobs with this status" in page.inner_text("#jobs-table")

    # Rows of unfinished jobs follow their job without a reload.
    page.get_by_label("failed").uncheck()
    slow = server.create_job(
        model["id"], config_list=config, export_onnx=False, options={"latency_runs": 100_000}
    )
    page.goto(f"{server.base_url}/ui/#/jobs")
    row = page.locator(f'#jobs-table tr[data-job-id="{slow["id"]}"]')
    expect(row).to_have_attribute("data-status", re.compile("queued|running"))
    server.cancel(slow["id"])
    expect(row).to_have_attribute("data-status", "cancelled", timeout=60_000)

    # A row links to its job page.
    page.get_by_label("succeeded").check()
    page.wait_for_selector(f'#jobs-table tr[data-job-id="{quick["id"]}"]')
    page.get_by_role("link", name=f"Job {quick['id']}").click()
    page.wait_for_selector("#job-status [data-status=succeeded]")


def test_accuracy_curves_are_drawn_from_the_fine_tuning_and_schedule_records(
    page: Any, server: Client
) -> None:
    # The shapes the pipeline publishes in job.metrics (finetune: every epoch; schedule: every step),
    # fed to the job page's own modules in the browser.
    page.goto(f"{server.base_url}/ui/#/jobs")
    page.wait_for_selector("#jobs-table")
    drawn = page.evaluate(
        """async () => {
            const report = await import("/ui/js/report.js");
            const charts = await import("/ui/js/charts.js");
            const job = {
                metrics: {
                    before: {accuracy: 0.975}, after: {accuracy: 0.962},
                    finetune: {original: {top1: 0.975}, pruned: {top1: 0.91}, finetuned: {top1: 0.97},
                               epochs: [{epoch: 1, val_top1: 0.95}, {epoch: 2, val_top1: 0.96},
                                        {epoch: 3, val_top1: 0.97}]},
                    schedule: {baseline: {top1: 0.975}, steps: [{step: 1, val: {top1: 0.97}},
                                                                  {step: 2, val: {top1: 0.965}}]},
                },
                result: {layers: []},
            };
            const drawn = report.accuracyCharts(job).map((acc) => {
                const fig = charts.lineChart({title: "t", description: "d", series: acc.series,
                    baseline: acc.baseline, xLabel: acc.xLabel, yLabel: "top-1",
                    yFormat: (v) => v.toFixed(3)});
                document.body.append(fig);
                return {
                    id: acc.id,
                    points: fig.querySelectorAll("circle.point").length,
                    lines: fig.querySelectorAll("path.line").length,
                    baseline: fig.querySelectorAll("line.baseline").length,
                };
            });
            return {
                drawn,
                none: report.accuracyCharts({metrics: {before: {}, after: {}}, result: {layers: []}}),
                accuracyRows: report.metricRows(job).length,
            };
        }"""
    )
    assert drawn == {
        "drawn": [
            {"id": "schedule", "points": 2, "lines": 1, "baseline": 1},
            {"id": "finetune", "points": 4, "lines": 1, "baseline": 1},  # the pruned model at epoch 0
        ],
        "none": [],
        "accuracyRows": 1,  # of the bars, only accuracy is measured in this job
    }


def test_job_page_falls_back_to_polling_when_the_event_stream_is_unavailable(
    page: Any, server: Client
) -> None:
    # A proxy that buffers or blocks text/event-stream must not leave the page without progress.
    model = server.upload_model(WEIGHTS, architecture="mnist_net")
    job = server.create_job(
        model["id"], config_list=json.loads(SEED_CONFIG), speedup=False, export_onnx=False, verify=False
    )
    page.route("**/events/stream*", lambda route: route.abort())

    page.goto(f"{server.base_url}/ui/#/jobs/{job['id']}")

    page.wait_for_selector("#job-status [data-status=succeeded]", timeout=JOB_DEADLINE_MS)
    page.wait_for_selector("#live-mode[data-mode=done]")
    assert any(re.search(r"/events\?", url) for url in page.requests)  # it polled
    expect(page.locator("#events li[data-type=succeeded]")).to_have_count(1)
    expect(page.locator("#events li[data-type=created]")).to_have_count(1)  # no event shown twice
    expect(page.locator("#chart-channels svg.chart rect.bar")).to_have_count(8)


LABEL_CHECK = """() => {
    const named = (el) => el.getAttribute("aria-label") || el.textContent.trim();
    const controls = [...document.querySelectorAll("input, select, textarea")];
    return {
        unlabelled: controls
            .filter((c) => !c.labels.length && !c.getAttribute("aria-label"))
            .map((c) => c.id || c.name),
        h1: document.querySelectorAll("h1").length,
        buttonsWithoutName: [...document.querySelectorAll("button")].filter((b) => !named(b)).length,
    };
}"""


@pytest.mark.parametrize("view", ["#/jobs", "#/new"])
def test_every_control_has_a_label_and_every_page_one_heading(page: Any, server: Client, view: str) -> None:
    page.goto(f"{server.base_url}/ui/{view}")
    page.wait_for_selector("main h1")
    page.wait_for_load_state("networkidle")

    assert page.evaluate(LABEL_CHECK) == {"unlabelled": [], "h1": 1, "buttonsWithoutName": 0}


def test_preflight_lists_the_coupled_channel_groups_of_a_residual_network(
    page: Any, server: Client, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    from nncompress.models import get

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.safetensors"
    save_file(get("resnet18_cifar").build().state_dict(), str(weights))
    config = [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]

    page.goto(f"{server.base_url}/ui/#/new")
    _upload_model(page, weights, "resnet18_cifar")
    page.get_by_label("config_list (JSON)").fill(json.dumps(config))
    page.wait_for_selector("#preflight-groups")

    model_id = page.inner_text("[data-field=model-id]")
    report = server.preflight(model_id, config)
    coupled = [g for g in report["groups"] if len(g["layers"]) > 1]
    assert len(coupled) == 4  # the stem with the first stage's adds, and one shortcut per later stage
    items = page.locator("#preflight-groups li")
    assert [li.get_attribute("data-group") for li in items.all()] == [str(g["id"]) for g in coupled]
    stem = items.first.inner_text()
    assert "conv1, layers.0.0.conv2, layers.0.1.conv2" in stem and "64 → 32 channels" in stem
    assert page.locator("#preflight-table tbody tr").count() == len(report["layers"])
    assert page.locator("#preflight-table .chip.coupled").count() == sum(len(g["layers"]) for g in coupled)


def test_a_scheduled_job_plots_accuracy_per_pruning_step(page: Any, server: Client) -> None:
    page.goto(f"{server.base_url}/ui/#/new")
    _upload_model(page)
    page.get_by_label("config_list (JSON)").fill(SEED_CONFIG)
    page.get_by_label("Data set").select_option("mnist_subset")
    page.get_by_label("More settings (JSON object, optional)").fill(
        '{"finetune": {"epochs": 1}, "schedule": {"kind": "agp", "steps": 2}}'
    )
    page.get_by_role("button", name="Start compression").click()
    page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f]+$"))
    page.wait_for_selector("#job-status [data-status=succeeded]", timeout=JOB_DEADLINE_MS)

    job = server.get_job(page.url.rsplit("/", 1)[-1])
    steps = job["metrics"]["schedule"]["steps"]
    assert len(steps) == 2
    curve = page.locator("#chart-accuracy-schedule svg.chart")
    assert curve.locator("circle.point").count() == len(steps)
    titles = [t.text_content() for t in curve.locator("circle.point title").all()]
    assert titles == [
        f"top-1 after the step's fine-tuning, pruning step {s['step']}: {s['val']['top1'] * 100:.1f}%"
        for s in steps
    ]
    # A line, not a filled area (the series colour fills the points only).
    assert curve.locator("path.line").evaluate("p => getComputedStyle(p).fill") == "none"


def test_cancel_button_stops_a_running_job(page: Any, server: Client) -> None:
    model = server.upload_model(WEIGHTS, architecture="mnist_net")
    # 100,000 timed runs keep the job in its evaluating stage for minutes: long enough to cancel.
    job = server.create_job(
        model["id"], config_list=json.loads(SEED_CONFIG), export_onnx=False, options={"latency_runs": 100_000}
    )
    page.goto(f"{server.base_url}/ui/#/jobs/{job['id']}")
    page.wait_for_selector("#job-status [data-status=running]", timeout=JOB_DEADLINE_MS)
    # Leaving a live page stops its stream quietly (an unhandled rejection fails the page fixture).
    page.get_by_role("link", name="New job").first.click()
    page.wait_for_selector("#model-file")
    page.go_back()
    page.wait_for_selector("#job-status [data-status=running]")

    page.get_by_role("button", name="Cancel job").click()

    page.wait_for_selector("#job-status [data-status=cancelled]", timeout=120_000)
    assert server.get_job(job["id"])["status"] == "cancelled"
    expect(page.locator("#events li[data-type=cancelled]")).to_have_count(1)
    assert page.get_by_role("button", name="Cancel job").is_hidden()


def test_job_page_shows_its_webhook_deliveries(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    received: list[dict[str, str]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            received.append(dict(self.headers))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    monkeypatch.setenv("NNCOMPRESS_WEBHOOK_ALLOW_PRIVATE", "true")  # the receiver is on loopback
    try:
        with embedded_server(tmp_path / "server") as server:
            page.goto(f"{server.base_url}/ui/#/new")
            _upload_model(page)
            page.get_by_label("config_list (JSON)").fill(SEED_CONFIG)
            settings = {"webhook": {"url": hook, "events": ["started", "succeeded"]}, "latency_runs": 3}
            page.get_by_label("More settings (JSON object, optional)").fill(json.dumps(settings))
            page.get_by_role("button", name="Start compression").click()
            page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f]+$"))
            page.wait_for_selector("#job-status [data-status=succeeded]", timeout=JOB_DEADLINE_MS)

            job = server.get_job(page.url.rsplit("/", 1)[-1])
            assert job["webhook"] == {"url": hook, "events": ["started", "succeeded"]}
            assert job["spec"]["latency_runs"] == 3  # an engine option next to a request field
            assert hook in page.inner_text("#webhook")
            delivered = page.locator('#webhook tr[data-event="succeeded"][data-delivered="true"]')
            expect(delivered).to_have_count(1)
            assert "delivered · 204" in delivered.inner_text()
            assert {"started", "succeeded"} <= {
                r.get_attribute("data-event") for r in page.locator("#webhook tbody tr").all()
            }
            assert received and all("webhook-signature" in {k.lower() for k in r} for r in received)
    finally:
        receiver.shutdown()


def test_sign_in_with_an_api_key_when_the_server_requires_one(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NNCOMPRESS_REQUIRE_API_KEYS", "true")  # the server below inherits it
    data_dir = tmp_path / "server"
    with embedded_server(data_dir) as server:
        created = subprocess.run(
            [sys.executable, "-m", "nncompress.cli", "keys", "create", "--tenant", "ml-team"],
            env={
                **os.environ,
                "NNCOMPRESS_DATABASE_URL": f"sqlite:///{data_dir.resolve() / 'nncompress.db'}",
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        key = created.stdout.strip()
        sent: list[str | None] = []
        page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/v1/" in r.url else None)

        page.goto(f"{server.base_url}/ui/")
        page.wait_for_url(re.compile(r".*#/signin$"))
        page.get_by_label("API key").fill("not-a-key")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#api-key-error:has-text('did not accept')")
        assert page.evaluate("sessionStorage.length") == 0

        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#jobs-table")
        signed_in_at = len(sent) - 1  # the sign-in check itself and everything after carry the key
        assert "Signed in" in page.inner_text("#session")
        assert page.evaluate("Object.values(sessionStorage)") == [key]  # this tab only
        # An authenticated call from the page: the architecture list of the job form.
        page.get_by_role("link", name="New job").first.click()
        page.wait_for_selector('#architecture option[value="mnist_net"]', state="attached")
        assert sent[signed_in_at:] and set(sent[signed_in_at:]) == {f"Bearer {key}"}

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r".*#/signin$"))
        assert page.evaluate("sessionStorage.length") == 0


def test_an_uploaded_data_set_can_be_chosen_for_a_job(page: Any, server: Client, tmp_path: Path) -> None:
    import httpx
    import numpy as np

    from nncompress.data import load_mnist_subset

    images, labels = load_mnist_subset()
    npz = tmp_path / "mnist-300.npz"
    np.savez(npz, x=images[:300].numpy(), y=labels[:300].numpy())
    with npz.open("rb") as f:
        uploaded = httpx.post(
            f"{server.base_url}/v1/datasets", files={"file": ("mnist-300.npz", f)}, timeout=60
        )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()

    page.goto(f"{server.base_url}/ui/#/new")
    _upload_model(page)
    page.get_by_label("config_list (JSON)").fill(SEED_CONFIG)
    option = page.locator(f'#dataset option[value="upload:{dataset["id"]}"]')
    assert "mnist-300.npz — 300 samples, 10 classes, [1×28×28]" in option.inner_text()
    page.get_by_label("Data set").select_option(f"upload:{dataset['id']}")
    page.get_by_label("More settings (JSON object, optional)").fill('{"finetune": {"epochs": 1}}')
    page.get_by_role("button", name="Start compression").click()
    page.wait_for_url(re.compile(r".*#/jobs/[0-9a-f]+$"))
    page.wait_for_selector("#job-status [data-status=succeeded]", timeout=JOB_DEADLINE_MS)

    job = server.get_job(page.url.rsplit("/", 1)[-1])
    assert job["spec"]["dataset_id"] == dataset["id"]
    assert job["metrics"]["data"]["train_samples"] + job["metrics"]["data"]["val_samples"] == 300
    expect(page.locator("#chart-accuracy-finetune svg.chart circle.point")).to_have_count(
        2
    )  # pruned, epoch 1
