"""The client against the real app (embedded, SQLite, API keys required) in uvicorn on a real socket
(tests/live_app.py). Network faults come from a real TCP proxy in front of the app (tests/live_server.py),
an ignored Range from the app behind a layer that drops the header, presigned downloads from moto's S3.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nncompress.client import (
    ChecksumMismatch,
    Client,
    ServiceError,
    ServiceUnreachable,
    WaitTimeout,
)
from tests.app.factories import CONV_HALF
from tests.live_app import Live, finished, live_apps, run_to, succeed, upload_mnist
from tests.live_server import TcpProxy, free_port
from tests.s3_server import S3Bucket, s3_bucket, s3_server  # noqa: F401 - fixtures

ARTIFACT = bytes(range(256)) * 4000  # 1,024,000 bytes: more than one read chunk


@pytest.fixture
def serve(
    make_settings: Callable[..., Any], make_api_key: Callable[..., str]
) -> Iterator[Callable[..., Live]]:
    with live_apps(make_settings, make_api_key) as start:
        yield start


@pytest.fixture
def live(serve: Callable[..., Live]) -> Live:
    return serve()


# -- requests and answers ----------------------------------------------------------------------------


def test_upload_streams_the_file_with_its_length_and_the_key(live: Live, tmp_path: Path) -> None:
    client = live.client(via_proxy=True)
    model = upload_mnist(client, tmp_path, name='we"ird name.safetensors')

    data = (tmp_path / 'we"ird name.safetensors').read_bytes()
    assert (model["sha256"], model["size_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert model["filename"] == "we_ird name.safetensors"  # a quote cannot break the part's header
    head = bytes(live.proxy.sent).split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"post /v1/models http/1.1")
    assert b"content-length: " in head and b"transfer-encoding" not in head
    assert f"authorization: bearer {live.key}".lower().encode() in head


def test_upload_holds_a_chunk_not_the_file(live: Live, tmp_path: Path) -> None:
    """A 32 MiB upload from another process: the most Python memory it holds at once stays a few MiB."""
    big = tmp_path / "big.safetensors"
    with big.open("wb") as fh:
        for i in range(32):
            fh.write(hashlib.sha256(str(i).encode()).digest() * 32768)  # 1 MiB each
    code = (
        "import sys, tracemalloc\n"
        "from nncompress.client import Client, ServiceError\n"
        "client = Client(sys.argv[1], api_key=sys.argv[2], timeout=120)\n"
        "client.healthz()\n"
        "tracemalloc.start()\n"
        "try:\n"
        "    client.upload_model(sys.argv[3], architecture='mnist_net')\n"
        "except ServiceError as exc:\n"
        "    assert exc.status is not None, exc  # answered (refused as weights), after reading it all\n"
        "print(tracemalloc.get_traced_memory()[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, live.proxy.url, live.key, str(big)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) < 4 * 2**20
    assert len(live.proxy.sent) > 32 * 2**20  # the whole file went through


def test_create_job_sends_the_contract_fields_and_idempotency_key(live: Live, tmp_path: Path) -> None:
    client = live.client()
    model = upload_mnist(client, tmp_path)
    kwargs: dict[str, Any] = dict(
        pruner="fpgm", speedup=False, export_onnx=False, verify=False, input_shape=[1, 1, 28, 28]
    )

    job = client.create_job(model["id"], CONV_HALF, idempotency_key="abc", **kwargs)
    again = client.create_job(model["id"], CONV_HALF, idempotency_key="abc", **kwargs)

    assert again["id"] == job["id"] and job["status"] == "queued"
    spec = client.get_job(job["id"])["spec"]
    assert spec["pruner"] == "fpgm" and spec["config_list"] == CONV_HALF
    assert (spec["speedup"], spec["export_onnx"], spec["verify"]) == (False, False, False)
    assert spec["input_shape"] == [1, 1, 28, 28]


def test_problem_json_becomes_service_error(live: Live, tmp_path: Path) -> None:
    client = live.client()
    model = upload_mnist(client, tmp_path)
    with pytest.raises(ServiceError) as info:
        client.create_job(model["id"], [{"sparse_ratio": 0.5, "op_names": ["no_such_layer"]}])
    err = info.value
    assert err.status == 422 and err.type == f"urn:nncompress:problem:{err.code}"
    assert err.code in ("unknown_layer", "invalid_config") and "no_such_layer" in str(err)
    with pytest.raises(ServiceError) as unauthorised:
        Client(live.url, api_key="wrong").get_job("x")
    assert unauthorised.value.status == 401


@pytest.mark.parametrize(
    ("job_id", "path"),
    [("../models/x", "/v1/jobs/..%2Fmodels%2Fx"), ("..", "/v1/jobs/%2E%2E"), ("a?b#c", "/v1/jobs/a%3Fb%23c")],
)
def test_ids_are_quoted_into_one_path_segment(live: Live, job_id: str, path: str) -> None:
    with pytest.raises(ServiceError) as info:
        live.client(via_proxy=True).get_job(job_id)
    assert info.value.status == 404
    assert f"GET {path} HTTP/1.1\r\n".encode() in live.proxy.sent


def test_a_proxy_error_page_keeps_its_status_and_body(live: Live) -> None:
    live.proxy.answer = (
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad gateway"
    )
    with pytest.raises(ServiceError) as info:
        live.client(via_proxy=True).get_job("j1")
    assert (info.value.status, info.value.type, info.value.detail) == (502, "about:blank", "bad gateway")


def test_list_jobs_and_iter_jobs_follow_the_cursor(live: Live, tmp_path: Path) -> None:
    client = live.client(via_proxy=True)
    model = upload_mnist(client, tmp_path)
    created = {client.create_job(model["id"], CONV_HALF)["id"] for _ in range(5)}

    page = client.list_jobs(status="queued", limit=2)
    assert len(page["items"]) == 2 and page["next_cursor"]
    assert b"GET /v1/jobs?status=queued&limit=2 HTTP/1.1" in live.proxy.sent  # no empty cursor=
    listed = [job["id"] for job in client.iter_jobs(status="queued", page_size=2)]
    assert sorted(listed) == sorted(created)
    assert bytes(live.proxy.sent).count(b"GET /v1/jobs?status=queued&limit=2&cursor=") == 2


def test_preflight_and_events(live: Live, tmp_path: Path) -> None:
    client = live.client()
    model = upload_mnist(client, tmp_path)
    checked = client.preflight(model["id"], CONV_HALF, input_shape=[1, 1, 28, 28])
    assert "conv1" in str(checked)
    job_id = client.create_job(model["id"], CONV_HALF)["id"]
    run_to(live, job_id, ("pruning", 20.0))

    events = client.events(job_id)["items"]
    assert events[0]["type"] == "created" and len(events) >= 2
    assert client.events(job_id, after=events[0]["id"])["items"] == events[1:]
    assert list(client.iter_events(job_id)) == events


def test_unreachable_server() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ServiceUnreachable) as info:
        Client(f"http://127.0.0.1:{port}", timeout=5).healthz()
    assert info.value.status is None and f"127.0.0.1:{port}" in info.value.detail


# -- wait ------------------------------------------------------------------------------------------


def test_polling_reports_each_change_and_returns_the_final_job(live: Live, tmp_path: Path) -> None:
    client = live.client()
    job_id = client.create_job(upload_mnist(client, tmp_path)["id"], CONV_HALF)["id"]
    seen: list[tuple[str, str | None, float]] = []

    def next_step(job: dict[str, Any]) -> None:
        """Each report moves the job on, so every state is seen by exactly one poll."""
        seen.append((job["status"], job["stage"], job["progress"]))
        if job["status"] == "queued":
            run_to(live, job_id, ("pruning", 20.0))
        elif job["status"] == "running":
            succeed(live, job_id)

    job = client.wait(job_id, on_progress=next_step, poll_interval=0.01, stream=False)

    assert job["status"] == "succeeded"
    assert seen[:2] == [("queued", None, 0.0), ("running", "pruning", 20.0)]
    assert [(status, progress) for status, _, progress in seen[2:]] == [("succeeded", 100.0)]


@pytest.mark.parametrize("stream", [True, False])
def test_wait_rides_out_a_short_outage(live: Live, tmp_path: Path, stream: bool) -> None:
    client = live.client(via_proxy=True)
    job_id = client.create_job(upload_mnist(client, tmp_path)["id"], CONV_HALF)["id"]
    first_report = threading.Event()
    result: dict[str, Any] = {}

    def follow() -> None:
        try:
            result["job"] = client.wait(
                job_id, on_progress=lambda j: first_report.set(), poll_interval=0.05, stream=stream
            )
        except Exception as exc:  # handed to the test thread
            result["error"] = exc

    waiter = threading.Thread(target=follow)
    waiter.start()
    assert first_report.wait(60)  # following the job (the stream is open, or a poll answered)
    live.proxy.down()
    live.proxy.wait_for(dropped=3)  # the client kept trying while the API was away
    run_to(live, job_id, ("pruning", 50.0))  # the job moved on meanwhile
    live.proxy.restore()
    succeed(live, job_id)
    waiter.join(60)

    assert "error" not in result, result.get("error")
    assert result["job"]["status"] == "succeeded"
    if stream:  # the stream was resumed after the last event it had delivered
        assert b"last-event-id: 1\r\n" in bytes(live.proxy.sent).lower()


def test_wait_gives_up_on_a_long_outage(live: Live, tmp_path: Path) -> None:
    client = live.client(via_proxy=True)
    job_id = client.create_job(upload_mnist(client, tmp_path)["id"], CONV_HALF)["id"]
    live.proxy.down()
    with pytest.raises(ServiceUnreachable):
        client.wait(job_id, poll_interval=0.05, outage_tolerance=0.5)
    assert live.proxy.dropped >= 2  # it retried before giving up


@pytest.mark.parametrize("stream", [True, False])
def test_wait_gives_up_at_the_deadline(
    live: Live, tmp_path: Path, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep-alives every poll: they reset the read timeout, so only the client's own clock can stop it.
    monkeypatch.setattr("app.services.event_stream.KEEPALIVE_SECONDS", 0.1)
    client = live.client()
    job_id = client.create_job(upload_mnist(client, tmp_path)["id"], CONV_HALF)["id"]
    run_to(live, job_id, ("pruning", 20.0))
    with pytest.raises(WaitTimeout) as info:
        client.wait(job_id, deadline=1.0, poll_interval=0.05, stream=stream)
    assert (info.value.job["status"], info.value.job["stage"]) == ("running", "pruning")


# -- download ----------------------------------------------------------------------------------------


def test_download_verifies_sha256(live: Live, tmp_path: Path) -> None:
    client = live.client()
    job_id = finished(live, upload_mnist(client, tmp_path)["id"], {"model.safetensors": ARTIFACT})
    out = tmp_path / "out"
    out.mkdir()
    path = client.download_artifact(job_id, "model.safetensors", out)
    assert path == out / "model.safetensors" and path.read_bytes() == ARTIFACT
    assert list(out.iterdir()) == [path]


def test_download_with_wrong_bytes_leaves_nothing(live: Live, tmp_path: Path) -> None:
    client = live.client()
    job_id = finished(live, upload_mnist(client, tmp_path)["id"], {"model.safetensors": ARTIFACT})
    stored = live.app.state.storage.path(f"jobs/{job_id}/model.safetensors")
    stored.write_bytes(ARTIFACT[::-1])  # same size, other bytes: the record's sha256 no longer holds
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ChecksumMismatch):
        client.download_artifact(job_id, "model.safetensors", out / "m.safetensors")
    assert list(out.iterdir()) == []


def range_tap(seen: dict[str, Any], honour: bool) -> Callable[[Any], Any]:
    """An ASGI layer that records the Range header and the body bytes sent; ``honour=False`` drops
    the header before the app sees it, as a server that ignores Range does."""

    def wrap(app: Any) -> Any:
        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or "/artifacts/" not in scope["path"]:
                return await app(scope, receive, send)
            headers = dict(scope["headers"])
            seen["range"] = headers.get(b"range")
            if not honour:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}

            async def counting(message: Any) -> None:
                if message["type"] == "http.response.start":
                    seen["status"] = message["status"]
                if message["type"] == "http.response.body":
                    seen["body_bytes"] = seen.get("body_bytes", 0) + len(message.get("body", b""))
                await send(message)

            await app(scope, receive, counting)

        return asgi

    return wrap


@pytest.mark.parametrize("honour", [True, False])
def test_download_resumes_a_partial_file(serve: Callable[..., Live], tmp_path: Path, honour: bool) -> None:
    seen: dict[str, Any] = {}
    live = serve(wrap=range_tap(seen, honour))
    client = live.client()
    job_id = finished(live, upload_mnist(client, tmp_path)["id"], {"model.safetensors": ARTIFACT})
    (tmp_path / "model.safetensors.part").write_bytes(ARTIFACT[:1000])

    path = client.download_artifact(job_id, "model.safetensors", tmp_path)

    assert path.read_bytes() == ARTIFACT and not (tmp_path / "model.safetensors.part").exists()
    assert seen["range"] == b"bytes=1000-"
    assert (seen["status"], seen["body_bytes"]) == (
        (206, len(ARTIFACT) - 1000) if honour else (200, len(ARTIFACT))
    )


def test_a_complete_part_file_is_checked_not_fetched_again(
    serve: Callable[..., Live], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    live = serve(wrap=range_tap(seen, honour=True))
    client = live.client()
    job_id = finished(live, upload_mnist(client, tmp_path)["id"], {"model.safetensors": ARTIFACT})
    (tmp_path / "model.safetensors.part").write_bytes(ARTIFACT)  # a run that stopped before the rename

    assert client.download_artifact(job_id, "model.safetensors", tmp_path).read_bytes() == ARTIFACT
    assert seen == {}  # no artifact request (a Range past the end would be a 416)


def test_a_download_cut_mid_way_is_resumed(live: Live, tmp_path: Path) -> None:
    client = live.client(via_proxy=True)
    job_id = finished(live, upload_mnist(client, tmp_path)["id"], {"model.safetensors": ARTIFACT})
    live.proxy.cut_after = 300_000  # answer bytes, headers included

    with pytest.raises(ServiceUnreachable):
        client.download_artifact(job_id, "model.safetensors", tmp_path)
    kept = (tmp_path / "model.safetensors.part").stat().st_size
    assert 0 < kept < 300_000 and not (tmp_path / "model.safetensors").exists()

    live.proxy.cut_after = None
    path = client.download_artifact(job_id, "model.safetensors", tmp_path)
    assert path.read_bytes() == ARTIFACT
    assert f"range: bytes={kept}-\r\n".encode() in bytes(live.proxy.sent).lower()


def test_download_of_unlisted_artifact_is_a_clear_error(live: Live, tmp_path: Path) -> None:
    client = live.client()
    job_id = finished(live, upload_mnist(client, tmp_path)["id"], {"model.safetensors": ARTIFACT})
    with pytest.raises(ServiceError, match=r"lists \['model.safetensors'\], not 'model.onnx'"):
        client.download_artifact(job_id, "model.onnx", tmp_path)


def test_download_follows_the_presigned_redirect_without_the_key(
    serve: Callable[..., Live],
    s3_bucket: S3Bucket,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The app reaches the store through a proxy, so the presigned URL names the proxy: every byte the
    # store is sent is on record.
    store = TcpProxy(("127.0.0.1", int(s3_bucket.server.endpoint.rsplit(":", 1)[1])))
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.url)
    live = serve(storage_url=s3_bucket.url, cache_dir=tmp_path / "cache", download_redirect_seconds=60)
    client = live.client()
    model_id = upload_mnist(client, tmp_path)["id"]
    storage = live.app.state.storage
    job_id = finished(live, model_id, {"model.safetensors": ARTIFACT})
    key = f"jobs/{job_id}/model.safetensors"
    storage.publish(storage.path(key), key)  # where a worker puts it: in the bucket, not on disk
    storage.path(key).unlink()
    (tmp_path / "model.safetensors.part").write_bytes(ARTIFACT[:1000])
    before = len(store.sent)

    path = client.download_artifact(job_id, "model.safetensors", tmp_path)

    assert path.read_bytes() == ARTIFACT
    to_store = bytes(store.sent[before:])
    assert f"/{s3_bucket.name}/".encode() in to_store and b"X-Amz-Signature=" in to_store
    assert b"range: bytes=1000-" in to_store.lower()  # the resume went to the store
    assert live.key.encode() not in bytes(store.sent)  # the API key never left the API
    assert b"authorization: bearer" not in to_store.lower()
    store.close()
