"""The client commands (``nncompress submit|status|download|cancel``) against the real app on a socket.

No worker: a thread plays the worker's part with the workers' own state functions once the app has
enqueued the job the command submitted (tests/live_app.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.factories import CONV_HALF, mnist_safetensors
from tests.live_app import Live, finished, live_apps, run_to, succeed, upload_mnist

METRICS = {
    "before": {"params": 431080, "bytes": 1724968, "latency_ms": {"batch_1": 0.5, "batch_64": 8.0}},
    "after": {"params": 108000, "bytes": 432000, "latency_ms": {"batch_1": 0.25, "batch_64": 2.0}},
}


@pytest.fixture
def live(make_settings: Callable[..., Any], make_api_key: Callable[..., str]) -> Iterator[Live]:
    with live_apps(make_settings, make_api_key) as start:
        yield start()


def cli(live: Live, *argv: str) -> int:
    from nncompress.cli import main

    return main([argv[0], "--server", live.url, "--api-key", live.key, *argv[1:]])


def test_submit_wait_uploads_submits_follows_and_prints_a_table(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "net.safetensors"
    weights.write_bytes(mnist_safetensors())
    config = tmp_path / "config.json"
    config.write_text('[{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]')

    def worker() -> None:
        job_id = live.dispatcher.wait_for_job()
        run_to(live, job_id, ("pruning", 20.0), ("speedup", 60.0))
        succeed(live, job_id, METRICS)

    thread = threading.Thread(target=worker)
    thread.start()
    rc = cli(
        live, "submit", "--model", str(weights), "--arch", "mnist_net", "--config", str(config),
        "--input-shape", "1x1x28x28", "--idempotency-key", "k1", "--wait", "--wait-timeout", "120",
    )  # fmt: skip
    thread.join(60)

    out, err = capsys.readouterr()
    assert rc == 0, err
    job_id = live.dispatcher.enqueued[0]
    job = live.client().get_job(job_id)
    assert job["spec"]["input_shape"] == [1, 1, 28, 28]
    assert job["spec"]["config_list"] == [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]
    assert live.client().get_model(job["model_id"])["size_bytes"] == weights.stat().st_size
    assert "[100%] succeeded" in err  # the progress line (stderr is not a terminal here)
    assert out.splitlines()[:2] == [job_id, f"job {job_id}: succeeded"]  # id first (for scripts)
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith("params")}
    assert table["params"][1:] == ["431,080", "108,000", "0.25x"]
    assert any("latency batch 64 (ms)" in line and "0.25x" in line for line in out.splitlines())


def test_submit_errors_exit_nonzero(live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_id = upload_mnist(live.client(), tmp_path)["id"]
    bad_layer = '[{"sparse_ratio": 0.5, "op_names": ["no_such_layer"]}]'
    assert cli(live, "submit", "--model-id", model_id, "--config", bad_layer) == 1
    assert "no_such_layer" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not valid JSON"):
        cli(live, "submit", "--model-id", model_id, "--config", "[{oops")
    with pytest.raises(SystemExit):
        cli(live, "submit", "--model-id", model_id, "--config", "[]", "--input-shape", "1,-1")


def test_download_all_and_cancel(live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = live.client()
    model_id = upload_mnist(client, tmp_path)["id"]
    files = {"model.safetensors": b"weights" * 1000, "report.json": b"{}"}
    done = finished(live, model_id, files)
    assert cli(live, "download", done, "--out", str(tmp_path / "out")) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == files

    queued = client.create_job(model_id, [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}])["id"]
    assert cli(live, "cancel", queued) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{queued}: cancelled"


def test_status_events_lists_transitions(
    live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = live.client()
    job_id = client.create_job(upload_mnist(client, tmp_path)["id"], CONV_HALF)["id"]
    run_to(live, job_id, ("pruning", 20.0))

    assert cli(live, "status", job_id, "--events") == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"job {job_id}: running (pruning, 20%)"
    events = out[out.index("events:") + 1 :]
    assert [line.split()[1:4] for line in events] == [
        ["queued", "-", "0%"],
        ["running", "-", "0%"],
        ["running", "pruning", "20%"],
    ]
    assert [line.split()[4].rstrip(":") for line in events] == ["created", "claimed", "stage"]


def test_status_of_unknown_job_fails(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(live, "status", "nope") == 1
    assert "404" in capsys.readouterr().err


def test_server_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nncompress.cli import build_parser

    monkeypatch.setenv("NNCOMPRESS_SERVER", "http://example.test:9")
    assert build_parser().parse_args(["status", "x"]).server == "http://example.test:9"
    monkeypatch.delenv("NNCOMPRESS_SERVER")
    assert build_parser().parse_args(["status", "x"]).server == "http://127.0.0.1:8000"
