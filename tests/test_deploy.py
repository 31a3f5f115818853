"""The deployment files, checked without a Docker engine.

- hadolint and check-jsonschema (the current Compose Specification schema) accept the shipped Dockerfile
  and docker-compose.yml, and so do this project's own rules (tests/deploy_contract.py); each rejects
  deliberately broken copies (each break is one a real deployment would trip over);
- the commands in the compose file and the Dockerfile are run for real, as the containers would run
  them, with the compose file's own environment variables pointed at this machine's PostgreSQL and Redis:
  the migration step, the API (its HEALTHCHECK included) and a worker, which then runs a job;
- the wheel the Dockerfile's builder stage makes from the files it copies ships the demo data and the
  migrations.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import deploy_contract as vc

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("NNCOMPRESS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# A Redis database of its own, so this test's worker never takes another test's queued messages.
REDIS_DB = 14


# -- lint: the shipped files pass, broken copies fail -----------------------------------------------


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hadolint"), str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_accepts_the_dockerfile() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    # An unpinned apt install in the runtime stage that leaves the apt lists behind.
    text = DOCKERFILE.read_text().replace(
        "USER 10001:10001", "RUN apt-get update && apt-get install curl\nUSER 10001:10001"
    )
    broken.write_text(text)
    result = _hadolint(broken)
    assert result.returncode != 0
    assert "DL3008" in result.stdout  # pin versions in apt-get install


def test_lint_deploy_script_passes() -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "lint_deploy.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_contract_accepts_the_shipped_files() -> None:
    assert vc.validate(COMPOSE, DOCKERFILE) == []


def _compose_doc() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _write_variant(tmp_path: Path, doc: dict[str, Any]) -> Path:
    """A compose file in tmp_path next to a copy of the real Dockerfile and build context markers."""
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    names = ("pyproject.toml", "README.md", "alembic.ini", "nncompress", "core", "app", "workers")
    names += ("migrations",)
    for name in names:
        target = tmp_path / name
        if (REPO / name).is_dir():
            target.mkdir()
        else:
            target.write_text("")
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _svc(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["services"][name]


BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "depends on a missing service": (
        lambda d: _svc(d, "api")["depends_on"].update({"cache": {"condition": "service_started"}}),
        "no service called 'cache'",
    ),
    "undeclared named volume": (
        lambda d: _svc(d, "api")["volumes"].append("scratch:/scratch"),
        "named volume 'scratch' is not declared",
    ),
    "service_healthy on a service without healthcheck": (
        lambda d: _svc(d, "redis").pop("healthcheck"),
        "waits for service_healthy but redis has no healthcheck",
    ),
    "one-shot migrate that restarts": (
        lambda d: _svc(d, "migrate").update(restart="always"),
        "waits for migrate to complete, but migrate has restart: always",
    ),
    "worker command the tests do not run": (
        lambda d: _svc(d, "worker").update(
            command=["celery", "-A", "workers.celery_app", "worker", "-Q", "gpu"]
        ),
        "does not start with the tested",
    ),
    "migration command changed": (
        lambda d: _svc(d, "migrate").update(command=["alembic", "upgrade", "heads"]),
        "is not the tested ['alembic', 'upgrade', 'head']",
    ),
    "api command changed": (
        lambda d: _svc(d, "api").update(command=["uvicorn", "app.main:app", "--host", "0.0.0.0"]),
        "services.api.command",
    ),
    "redis without AOF": (
        lambda d: _svc(d, "redis").update(command=["redis-server"]),
        "--appendonly yes",
    ),
    "gpu worker without a device reservation": (
        lambda d: _svc(d, "worker").pop("deploy"),
        "serves the gpu queue but reserves no device",
    ),
    "gpu worker built with CPU torch": (
        lambda d: _svc(d, "worker")["build"].update(args=["TORCH_VARIANT=cpu"]),
        "a gpu worker needs a CUDA torch build",
    ),
    "api and worker on different storage": (
        lambda d: _svc(d, "worker").update(volumes=["pgdata:/data"]),
        "must mount one named volume",
    ),
    "worker without the object-storage settings": (
        lambda d: _svc(d, "worker")["environment"].pop("NNCOMPRESS_STORAGE_URL"),
        "services.worker.environment: missing NNCOMPRESS_STORAGE_URL",
    ),
    "cache folder on the shared volume": (
        lambda d: _svc(d, "api")["environment"].update(NNCOMPRESS_CACHE_DIR="/data/cache"),
        "services.api.environment.NNCOMPRESS_CACHE_DIR: on the named volume 'storage'",
    ),
    "worker without BROKER_URL": (
        lambda d: _svc(d, "worker").update(
            environment={k: v for k, v in _svc(d, "worker")["environment"].items() if k != "BROKER_URL"}
        ),
        "services.worker.environment: missing BROKER_URL",
    ),
    "dependency cycle": (
        lambda d: _svc(d, "postgres").update(depends_on={"api": {"condition": "service_started"}}),
        "depends_on: cycle",
    ),
    "unpinned external image": (
        lambda d: _svc(d, "redis").update(image="redis"),
        "'redis' is not pinned",
    ),
    "interpolation without default": (
        lambda d: _svc(d, "postgres")["environment"].update(POSTGRES_PASSWORD="${POSTGRES_PASSWORD}"),
        "${POSTGRES_PASSWORD} has no default",
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_contract_rejects_a_broken_compose_file(tmp_path: Path, name: str) -> None:
    mutate, expected = BREAKS[name]
    doc = copy.deepcopy(_compose_doc())
    mutate(doc)

    errors = vc.validate(_write_variant(tmp_path, doc))

    assert any(expected in e for e in errors), errors


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


SCHEMA_BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown service key": (lambda d: _svc(d, "api").update(restart_policy="always"), "restart_policy"),
    "unknown depends_on condition": (
        lambda d: _svc(d, "api")["depends_on"].update({"redis": {"condition": "service_ready"}}),
        "service_ready",
    ),
    "port as a mapping of the wrong shape": (lambda d: _svc(d, "api").update(ports=[{"to": 1}]), "ports"),
}


def test_compose_schema_accepts_the_shipped_file() -> None:
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(SCHEMA_BREAKS))
def test_compose_schema_rejects_a_broken_file(tmp_path: Path, name: str) -> None:
    mutate, expected = SCHEMA_BREAKS[name]
    doc = copy.deepcopy(_compose_doc())
    mutate(doc)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))

    result = _check_jsonschema(path)

    assert result.returncode == 1
    assert expected in result.stdout + result.stderr


def test_the_unbroken_variant_passes(tmp_path: Path) -> None:
    # The control for the test above: the same round trip through yaml without a break is valid.
    assert vc.validate(_write_variant(tmp_path, _compose_doc())) == []


def test_compose_schema_check_rejects_duplicate_keys(tmp_path: Path) -> None:
    original = "    image: redis:7.4-alpine\n"
    assert original in COMPOSE.read_text()
    path = tmp_path / "docker-compose.yml"
    path.write_text(COMPOSE.read_text().replace(original, original + "    image: redis:6\n", 1))

    result = _check_jsonschema(path)

    assert result.returncode == 1
    assert "duplicate key" in result.stdout + result.stderr


DOCKERFILE_BREAKS = {
    "root user": (("USER 10001:10001", "USER root"), "non-root USER"),
    "shell-form CMD": (
        (
            'CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]',
            "CMD uvicorn",
        ),
        "is not the tested API command",
    ),
    "no healthcheck": (("HEALTHCHECK --interval", "# HEALTHCHECK --interval"), "needs a HEALTHCHECK"),
    "copies a missing file": (("COPY alembic.ini ./", "COPY alembic.cfg ./"), "'alembic.cfg' does not exist"),
    "build tools in the runtime image": (
        ("RUN useradd", "RUN apt-get install -y --no-install-recommends gcc=12 && useradd"),
        "installs build tools",
    ),
}


@pytest.mark.parametrize("name", sorted(DOCKERFILE_BREAKS))
def test_contract_rejects_a_broken_dockerfile(tmp_path: Path, name: str) -> None:
    (old, new), expected = DOCKERFILE_BREAKS[name]
    text = DOCKERFILE.read_text()
    assert old in text
    path = _write_variant(tmp_path, _compose_doc()).parent / "Dockerfile"
    path.write_text(text.replace(old, new))

    errors = vc.dockerfile_errors(path)

    assert any(expected in e for e in errors), errors


def test_dockerignore_excluding_a_copied_source_is_caught(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, _compose_doc())
    (tmp_path / ".dockerignore").write_text((REPO / ".dockerignore").read_text() + "migrations/\n")
    assert any("excluded by .dockerignore" in e for e in vc.dockerfile_errors(path.parent / "Dockerfile"))


# -- the image's contents: the wheel its builder stage makes ----------------------------------------


def test_builder_wheel_ships_data_and_migrations(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    instrs = vc.dockerfile_instructions(DOCKERFILE)
    second_from = [i for i, (_, instr, _) in enumerate(instrs) if instr == "FROM"][1]
    builder = [args for _, instr, args in instrs[:second_from] if instr == "COPY"]
    for args in builder:
        *sources, _dest = args.split()
        for src in sources:
            src_path = REPO / src
            if src_path.is_dir():
                shutil.copytree(src_path, context / src, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src_path, context / src)
    # With build isolation, as the Dockerfile's `pip wheel` runs: the build backend pyproject.toml names
    # is fetched, not whatever setuptools this virtualenv happens to hold.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("nncompress-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "nncompress/data/mnist_net.safetensors",
        "nncompress/data/mnist_subset.npz",
        "nncompress/client/api.py",
        "app/main.py",
        "workers/__main__.py",
        "migrations/env.py",
    ):
        assert needed in names
    assert any(n.startswith("migrations/versions/") and n.endswith(".py") for n in names)


# -- the compose commands, run for real --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _argv(command: list[str]) -> list[str]:
    """A container command with its programs resolved in this virtualenv (the image's /opt/venv)."""
    head = sys.executable if command[0] == "python" else str(BIN / command[0])
    return [head, *command[1:]]


def _service_env(service: str, *, database_url: str, storage: Path) -> dict[str, str]:
    """The compose file's environment for ``service``, its hosts replaced by this machine's servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNCOMPRESS_") and k not in vc.SERVICE_ENV}
    compose_env = vc.interpolate(vc.load_compose(COMPOSE), [])["services"][service]["environment"]
    redis = urllib.parse.urlsplit(REDIS_URL)._replace(path=f"/{REDIS_DB}").geturl()
    local = {"DATABASE_URL": database_url, "BROKER_URL": redis, "NNCOMPRESS_STORAGE_DIR": str(storage)}
    # Object storage keeps the compose default (off); the job flow on S3 is tests/workers/test_s3_e2e.py.
    local.update({k: str(compose_env[k]) for k in vc.OBJECT_STORAGE_ENV if k in compose_env})
    local["NNCOMPRESS_CACHE_DIR"] = str(storage.parent / f"cache-{service}")
    assert set(local) >= set(compose_env), f"{service} sets variables this test does not map: {compose_env}"
    env.update({k: local[k] for k in compose_env})
    env["NNCOMPRESS_RECONCILE_INTERVAL_SECONDS"] = "2"
    return env


def _commands() -> dict[str, list[str]]:
    return dict(vc.iter_commands(COMPOSE))


@pytest.fixture
def pg_plain_url(make_pg_database: Callable[[], str]) -> str:
    """An empty PostgreSQL database, as a plain ``postgresql://`` URL like compose's DATABASE_URL."""
    return make_pg_database().replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.mark.service
def test_migrate_command_creates_the_schema(pg_plain_url: str, tmp_path: Path) -> None:
    import sqlalchemy

    env = _service_env("migrate", database_url=pg_plain_url, storage=tmp_path)
    # The image's WORKDIR holds alembic.ini and migrations/, as the repository root does.
    result = subprocess.run(
        _argv(_commands()["migrate"]), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

    engine = sqlalchemy.create_engine(pg_plain_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"models", "jobs", "job_events", "artifacts", "alembic_version"} <= tables


class _Proc:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                argv, cwd=log.parent, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {what}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{self.text()}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def processes() -> Iterator[list[_Proc]]:
    started: list[_Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def _healthcheck_argv(port: int) -> list[str]:
    (args,) = [a for _, instr, a in vc.dockerfile_instructions(DOCKERFILE) if instr == "HEALTHCHECK"]
    exec_form = json.loads(args[args.index("CMD") + 3 :])
    return _argv([part.replace(":8000/", f":{port}/") for part in exec_form])


@pytest.mark.service
@pytest.mark.slow
def test_api_and_worker_commands_run_a_job(pg_plain_url: str, tmp_path: Path, processes: list[_Proc]) -> None:
    from nncompress.client import Client
    from nncompress.data import mnist_net_weights_path

    commands = _commands()
    storage = tmp_path / "storage"
    migrate = subprocess.run(
        _argv(commands["migrate"]),
        cwd=REPO,
        env=_service_env("migrate", database_url=pg_plain_url, storage=storage),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    # Distributed mode requires an API key: the operator creates one with the admin command.
    keys = subprocess.run(
        [sys.executable, "-m", "nncompress.cli", "keys", "create", "--tenant", "deploy-test"],
        cwd=REPO,
        env=_service_env("api", database_url=pg_plain_url, storage=storage),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert keys.returncode == 0, keys.stderr
    api_key = keys.stdout.strip()
    port = _free_port()
    assert (
        subprocess.run(_healthcheck_argv(port), capture_output=True, timeout=30).returncode != 0
    )  # nothing up yet

    api_cmd = [
        {"0.0.0.0": "127.0.0.1", "8000": str(port)}.get(part, part) for part in commands["api"]
    ]  # never listen on every interface of a shared machine
    api = _Proc(
        _argv(api_cmd), _service_env("api", database_url=pg_plain_url, storage=storage), tmp_path / "api.log"
    )
    processes.append(api)
    # The compose file's default worker (queues gpu,cpu): it takes this CPU job as a GPU worker would.
    worker = _Proc(
        _argv(commands["worker"]),
        _service_env("worker", database_url=pg_plain_url, storage=storage),
        tmp_path / "worker.log",
    )
    processes.append(worker)
    client = Client(f"http://127.0.0.1:{port}", api_key=api_key, timeout=30)

    def ready() -> bool:
        try:
            return client.readyz() is not None
        except Exception:
            return False

    api.wait_for(ready, 120, "/readyz answering 200 (database and broker reachable)")
    health = subprocess.run(_healthcheck_argv(port), capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, health.stderr
    worker.wait_for(lambda: " ready." in worker.text(), 120, "the Celery worker to be ready")

    model = client.upload_model(mnist_net_weights_path(), architecture="mnist_net")
    job = client.create_job(
        model["id"],
        [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}],
        export_onnx=False,
        input_shape=[1, 1, 28, 28],
    )
    job = client.wait(job["id"], deadline=300, poll_interval=0.5)

    assert job["status"] == "succeeded", f"{job.get('error')}\n--- worker log:\n{worker.text()[-3000:]}"
    assert job["metrics"]["after"]["params"] < job["metrics"]["before"]["params"]
    assert {a["name"] for a in job["artifacts"]} >= {"model.safetensors", "manifest.json"}
