"""The stdlib client against a small in-process HTTP server that speaks the API's contract.

A fake server (not the real app) keeps these tests about the client: what it sends on the wire and
how it treats answers, including the ones a real server rarely gives (bad checksums, ignored Ranges).
The real app is exercised end to end by tests/test_demo.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nncompress.client import ChecksumMismatch, Client, ServiceError, ServiceUnreachable, WaitTimeout

ARTIFACT = bytes(range(256)) * 4000  # 1,024,000 bytes: more than one read chunk


@dataclass
class FakeState:
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    job_bodies: list[dict[str, Any]] = field(default_factory=list)
    polls_until_done: int = 2
    polls: int = 0
    listed_sha: str = hashlib.sha256(ARTIFACT).hexdigest()
    honour_range: bool = True
    ranges: list[str] = field(default_factory=list)
    served_bytes: int = 0
    outages: int = 0


def _job(state: FakeState) -> dict[str, Any]:
    done = state.polls >= state.polls_until_done
    return {
        "id": "j1",
        "model_id": "m1",
        "attempt": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "error": None,
        "metrics": {
            "before": {"params": 431080, "bytes": 1724968, "latency_ms": {"batch_1": 0.5, "batch_64": 8.0}},
            "after": {"params": 108000, "bytes": 432000, "latency_ms": {"batch_1": 0.25, "batch_64": 2.0}},
        }
        if done
        else None,
        "status": "succeeded" if done else "running",
        "stage": None if done else "pruning",
        "progress": 100.0 if done else 10.0 * state.polls,
        "artifacts": [
            {
                "name": "model.safetensors",
                "size_bytes": len(ARTIFACT),
                "sha256": state.listed_sha,
                "media_type": "application/octet-stream",
                "url": "/v1/jobs/j1/artifacts/model.safetensors",
            }
        ],
    }


def _handler(state: FakeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, doc: Any, ctype: str = "application/json") -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _problem(self, status: int, code: str, detail: str, **extra: Any) -> None:
            doc = {
                "type": f"urn:nncompress:problem:{code}",
                "title": code,
                "status": status,
                "detail": detail,
            }
            self._send(status, {**doc, **extra}, "application/problem+json")

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, dict(self.headers)))
            if self.path == "/v1/jobs/j1" and state.outages > 0:
                state.outages -= 1
                self._problem(503, "unavailable", "restarting")
            elif self.path == "/v1/jobs/j1":
                state.polls += 1
                self._send(200, _job(state))
            elif self.path.startswith("/v1/jobs?"):
                # Three pages of two jobs, the cursor being the next page's number.
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                page = int(query.get("cursor", "0"))
                items = [{"id": f"job{2 * page + i}"} for i in range(2)]
                self._send(
                    200,
                    {"items": items, "next_cursor": str(page + 1) if page < 2 else None, "echo": self.path},
                )
            elif self.path.startswith("/v1/jobs/j1/events"):
                after = int(
                    dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)).get("after", "0")
                )
                events = [
                    {
                        "id": 1,
                        "at": "2026-01-01T00:00:00Z",
                        "type": "created",
                        "status": "queued",
                        "stage": None,
                        "progress": 0.0,
                        "message": None,
                    },
                    {
                        "id": 2,
                        "at": "2026-01-01T00:00:01Z",
                        "type": "stage",
                        "status": "running",
                        "stage": "pruning",
                        "progress": 20.0,
                        "message": "pruning 3 layers",
                    },
                ]
                items = [e for e in events if e["id"] > after]
                self._send(200, {"items": items, "next_cursor": items[-1]["id"] if items else after})
            elif self.path == "/v1/jobs/j1/artifacts/model.safetensors":
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    state.ranges.append(rng)
                if rng and state.honour_range:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                body = ARTIFACT[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                state.served_bytes += len(body)  # before writing: the client may finish first
                self.wfile.write(body)
            elif self.path == "/v1/jobs/plain-error":
                self.send_response(502)
                self.send_header("Content-Length", "11")
                self.end_headers()
                self.wfile.write(b"bad gateway")
            else:
                self._problem(404, "not_found", f"no such resource {self.path}")

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path, dict(self.headers)))
            length = int(self.headers["Content-Length"])
            raw = self.rfile.read(length)
            if self.path == "/v1/models":
                msg = BytesParser(policy=HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw
                )
                parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
                upload = {
                    "architecture": parts["architecture"].get_content().strip(),
                    "filename": parts["file"].get_filename(),
                    "data": parts["file"].get_payload(decode=True),
                    "chunked": "Transfer-Encoding" in self.headers,
                }
                state.uploads.append(upload)
                digest = hashlib.sha256(upload["data"]).hexdigest()
                self._send(201, {"id": "m1", "sha256": digest, "size_bytes": len(upload["data"])})
            elif self.path == "/v1/jobs":
                body = json.loads(raw)
                state.job_bodies.append(body)
                if body["config_list"] == []:
                    self._problem(
                        422,
                        "config_invalid",
                        "config_list is empty",
                        errors=[{"entry": 0, "key": "config_list"}],
                    )
                else:
                    self._send(202, {"id": "j1", "status": "queued"})
            elif self.path == "/v1/models/m1/preflight":
                self._send(200, {"echo": json.loads(raw)})
            elif self.path == "/v1/jobs/j1/cancel":
                self._send(202, {"id": "j1", "status": "cancelling"})
            else:
                self._problem(404, "not_found", self.path)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Client, FakeState]]:
    state = FakeState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{httpd.server_address[1]}/", api_key="k3y", timeout=5), state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_upload_streams_a_multipart_body_with_exact_length(
    server: tuple[Client, FakeState], tmp_path: Path
) -> None:
    client, state = server
    weights = tmp_path / 'we"ird name.safetensors'
    weights.write_bytes(ARTIFACT)

    out = client.upload_model(weights, architecture="mnist_net")

    assert out["sha256"] == hashlib.sha256(ARTIFACT).hexdigest()
    (upload,) = state.uploads
    assert upload["architecture"] == "mnist_net"
    assert upload["data"] == ARTIFACT
    assert upload["filename"] == "we_ird name.safetensors"  # a quote cannot break the header
    assert upload["chunked"] is False
    assert state.requests[0][2]["Authorization"] == "Bearer k3y"


def test_create_job_sends_the_contract_fields_and_idempotency_key(server: tuple[Client, FakeState]) -> None:
    client, state = server
    job = client.create_job(
        "m1", [{"sparsity_per_layer": 0.5}], input_shape=[1, 1, 28, 28], idempotency_key="abc"
    )

    assert job == {"id": "j1", "status": "queued"}
    (body,) = state.job_bodies
    assert body == {
        "model_id": "m1",
        "pruner": "l1norm",
        "config_list": [{"sparsity_per_layer": 0.5}],
        "speedup": True,
        "device": "cpu",
        "input_shape": [1, 1, 28, 28],
        "export_onnx": True,
        "verify": True,
    }
    assert state.requests[-1][2]["Idempotency-Key"] == "abc"


def test_problem_json_becomes_service_error(server: tuple[Client, FakeState]) -> None:
    client, _ = server
    with pytest.raises(ServiceError) as info:
        client.create_job("m1", [])
    err = info.value
    assert (err.status, err.code, err.detail) == (422, "config_invalid", "config_list is empty")
    assert err.errors == [{"entry": 0, "key": "config_list"}]


def test_ids_are_quoted_into_one_path_segment(server: tuple[Client, FakeState]) -> None:
    client, state = server
    with pytest.raises(ServiceError) as info:
        client.get_job("../models/x")
    assert info.value.status == 404
    assert state.requests[-1][1] == "/v1/jobs/..%2Fmodels%2Fx"


def test_non_problem_error_keeps_status_and_body(server: tuple[Client, FakeState]) -> None:
    client, _ = server
    with pytest.raises(ServiceError) as info:
        client.get_job("plain-error")
    assert (info.value.status, info.value.type, info.value.detail) == (502, "about:blank", "bad gateway")


def test_list_jobs_drops_unset_filters(server: tuple[Client, FakeState]) -> None:
    client, _ = server
    page = client.list_jobs(status="running", limit=5)
    assert page["echo"] == "/v1/jobs?status=running&limit=5"


def test_iter_jobs_follows_the_cursor_to_the_last_page(server: tuple[Client, FakeState]) -> None:
    client, state = server
    assert [j["id"] for j in client.iter_jobs(status="succeeded", page_size=2)] == [
        f"job{i}" for i in range(6)
    ]
    paths = [path for method, path, _ in state.requests if path.startswith("/v1/jobs?")]
    assert paths[1:] == [
        "/v1/jobs?status=succeeded&limit=2&cursor=1",
        "/v1/jobs?status=succeeded&limit=2&cursor=2",
    ]


def test_preflight_and_events(server: tuple[Client, FakeState]) -> None:
    client, _ = server
    body = client.preflight("m1", [{"sparse_ratio": 0.5}], pruner="fpgm", input_shape=(1, 1, 28, 28))["echo"]
    assert body == {"config_list": [{"sparse_ratio": 0.5}], "pruner": "fpgm", "input_shape": [1, 1, 28, 28]}
    assert [e["id"] for e in client.events("j1")["items"]] == [1, 2]
    assert [e["id"] for e in client.events("j1", after=1)["items"]] == [2]


def test_wait_reports_each_change_and_returns_the_final_job(server: tuple[Client, FakeState]) -> None:
    client, state = server
    state.polls_until_done = 3
    seen: list[tuple[str, float]] = []

    job = client.wait(
        "j1", on_progress=lambda j: seen.append((j["status"], j["progress"])), poll_interval=0.01
    )

    assert job["status"] == "succeeded"
    assert seen == [("running", 10.0), ("running", 20.0), ("succeeded", 100.0)]


def test_wait_rides_out_a_short_outage_but_not_a_long_one(server: tuple[Client, FakeState]) -> None:
    client, state = server
    state.outages, state.polls_until_done = 3, 1
    assert client.wait("j1", poll_interval=0.01)["status"] == "succeeded"

    state.outages, state.polls, state.polls_until_done = 10**9, 0, 1
    with pytest.raises(ServiceError) as info:
        client.wait("j1", poll_interval=0.01, outage_tolerance=0.1)
    assert info.value.status == 503


def test_wait_gives_up_at_the_deadline(server: tuple[Client, FakeState]) -> None:
    client, state = server
    state.polls_until_done = 10**9
    with pytest.raises(WaitTimeout) as info:
        client.wait("j1", deadline=0.2, poll_interval=0.05)
    assert info.value.job["status"] == "running"


def test_download_verifies_sha256(server: tuple[Client, FakeState], tmp_path: Path) -> None:
    client, _ = server
    path = client.download_artifact("j1", "model.safetensors", tmp_path)
    assert path == tmp_path / "model.safetensors"
    assert path.read_bytes() == ARTIFACT
    assert not (tmp_path / "model.safetensors.part").exists()


def test_download_with_wrong_checksum_leaves_nothing(
    server: tuple[Client, FakeState], tmp_path: Path
) -> None:
    client, state = server
    state.listed_sha = "0" * 64
    with pytest.raises(ChecksumMismatch):
        client.download_artifact("j1", "model.safetensors", tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_a_partial_file(
    server: tuple[Client, FakeState], tmp_path: Path, honour_range: bool
) -> None:
    client, state = server
    state.honour_range = honour_range
    (tmp_path / "model.safetensors.part").write_bytes(ARTIFACT[:1000])

    path = client.download_artifact("j1", "model.safetensors", tmp_path)

    assert path.read_bytes() == ARTIFACT
    assert state.ranges == ["bytes=1000-"]
    assert state.served_bytes == (len(ARTIFACT) - 1000 if honour_range else len(ARTIFACT))


def test_download_of_unlisted_artifact_is_a_clear_error(
    server: tuple[Client, FakeState], tmp_path: Path
) -> None:
    client, _ = server
    with pytest.raises(ServiceError, match=r"lists \['model.safetensors'\], not 'model.onnx'"):
        client.download_artifact("j1", "model.onnx", tmp_path)


def test_unreachable_server() -> None:
    client = Client("http://127.0.0.1:9", timeout=2)  # port 9 (discard) is closed on test machines
    with pytest.raises(ServiceUnreachable) as info:
        client.healthz()
    assert info.value.status is None
    assert "127.0.0.1:9" in info.value.detail


# -- the CLI commands built on the client ----------------------------------------------------------


def _cli(client: Client, *argv: str) -> int:
    from nncompress.cli import main

    return main([argv[0], "--server", client.base_url, *argv[1:]])


def test_cli_submit_wait_uploads_submits_and_prints_a_table(
    server: tuple[Client, FakeState], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, state = server
    weights = tmp_path / "net.safetensors"
    weights.write_bytes(b"weights")
    config = tmp_path / "config.json"
    config.write_text('[{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}]')

    rc = _cli(
        client, "submit", "--model", str(weights), "--arch", "mnist_net", "--config", str(config),
        "--input-shape", "1x1x28x28", "--idempotency-key", "k1", "--wait",
    )  # fmt: skip

    out, err = capsys.readouterr()
    assert rc == 0
    assert state.uploads[0]["data"] == b"weights"
    assert state.job_bodies[0]["input_shape"] == [1, 1, 28, 28]
    assert state.job_bodies[0]["config_list"] == [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}]
    assert "[100%] succeeded" in err  # the progress line (stderr is not a terminal here)
    assert out.splitlines()[:2] == ["j1", "job j1: succeeded"]  # id first (for scripts), then the summary
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith("params")}
    assert table["params"][1:] == ["431,080", "108,000", "0.25x"]
    assert any("latency batch 64 (ms)" in line and "0.25x" in line for line in out.splitlines())


def test_cli_submit_inline_config_errors_exit_nonzero(
    server: tuple[Client, FakeState], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = server
    assert _cli(client, "submit", "--model-id", "m1", "--config", "[]") == 1
    assert "config_list is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not valid JSON"):
        _cli(client, "submit", "--model-id", "m1", "--config", "[{oops")
    with pytest.raises(SystemExit):
        _cli(client, "submit", "--model-id", "m1", "--config", "[]", "--input-shape", "1,-1")


def test_cli_download_all_and_cancel(
    server: tuple[Client, FakeState], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, state = server
    state.polls_until_done = 0
    assert _cli(client, "download", "j1", "--out", str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == ARTIFACT
    assert _cli(client, "cancel", "j1") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "j1: cancelling"


def test_cli_status_events_lists_transitions(
    server: tuple[Client, FakeState], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = server
    assert _cli(client, "status", "j1", "--events") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [
        "  2026-01-01T00:00:00Z  queued     -            0%  created",
        "  2026-01-01T00:00:01Z  running    pruning     20%  stage: pruning 3 layers",
    ]


def test_cli_status_of_unknown_job_fails(
    server: tuple[Client, FakeState], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = server
    assert _cli(client, "status", "nope") == 1
    assert "404" in capsys.readouterr().err


def test_server_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from nncompress.cli import build_parser

    monkeypatch.setenv("NNCOMPRESS_SERVER", "http://example.test:9")
    assert build_parser().parse_args(["status", "x"]).server == "http://example.test:9"
    monkeypatch.delenv("NNCOMPRESS_SERVER")
    assert build_parser().parse_args(["status", "x"]).server == "http://127.0.0.1:8000"
