"""This project's own deployment rules for docker-compose.yml and the Dockerfile, checked by tests.

The Compose Specification schema is checked by check-jsonschema (``scripts/lint_deploy.sh``, the current
schema it ships as ``vendor.compose-spec``) and the Dockerfile by hadolint; what is here is what neither can
know:

1. **Structure** a schema cannot express: ``depends_on`` names services that exist, without cycles;
   ``service_healthy`` waits on a service that has a healthcheck and ``service_completed_successfully`` on
   a one-shot; named volumes are declared (and declared ones used); host ports are not published twice;
   external images are pinned; every ``${VAR}`` has a default.
2. **Contract**: the commands are the ones the tests run: the API is ``uvicorn app.main:create_app --factory``
   (also the Dockerfile's CMD), the migration is ``alembic upgrade head`` (tests/test_deploy.py runs it),
   workers are ``python -m workers --queues ...`` (as tests/workers/conftest.py starts them), GPU workers
   reserve an NVIDIA device, Redis keeps an append-only file, API and workers share the storage volume and
   get DATABASE_URL / BROKER_URL / NNCOMPRESS_STORAGE_DIR, and the object-storage settings too (so that
   NNCOMPRESS_STORAGE_URL alone switches every service to S3), with a cache folder of each container's
   own, never on the shared volume. The Dockerfile is multi-stage, ends as a non-root
   user, probes /healthz and copies only files that exist and that .dockerignore lets through.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# The deployment's commands. tests/test_deploy.py runs each of them for real (without Docker).
API_COMMAND = ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
MIGRATE_COMMAND = ["alembic", "upgrade", "head"]
WORKER_ENTRY = ["python", "-m", "workers", "--queues"]
WORKER_QUEUES = {"cpu", "gpu"}
SERVICE_ENV = ("DATABASE_URL", "BROKER_URL", "NNCOMPRESS_STORAGE_DIR")
OBJECT_STORAGE_ENV = (
    "NNCOMPRESS_STORAGE_URL",
    "NNCOMPRESS_CACHE_DIR",
    "NNCOMPRESS_DOWNLOAD_REDIRECT_SECONDS",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)
REQUIRED_SERVICES = ("postgres", "redis", "migrate", "api", "worker")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|make|clang|cmake)\b")

_INTERPOLATION = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


# -- loading --------------------------------------------------------------------------------------


def load_compose(path: Path) -> dict[str, Any]:
    """Parses the file; raises ValueError with the YAML position on a syntax error."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: the top level must be a mapping, got {type(doc).__name__}")
    return doc


def interpolate(value: Any, errors: list[str], where: str = "") -> Any:
    """Compose-style interpolation using the defaults written in the file (the environment is not read,
    so the result does not depend on the machine). A ``${VAR}`` without a default is reported."""
    if isinstance(value, dict):
        return {k: interpolate(v, errors, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, errors, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expr = match.group("braced")
        if expr is None:
            errors.append(
                f"{where}: ${match.group('plain')} has no default; write ${{{match.group('plain')}:-value}}"
            )
            return ""
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", expr, flags=re.S)
        if m is None:
            errors.append(f"{where}: invalid interpolation ${{{expr}}}")
            return ""
        name, op, arg = m.groups()
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return f"<{name}>"  # required from the environment: deliberately no default
        errors.append(f"{where}: ${{{name}}} has no default; write ${{{name}:-value}}")
        return ""

    return _INTERPOLATION.sub(replace, value)


# -- structure -----------------------------------------------------------------------------------


def structure_errors(doc: dict[str, Any], dockerfile_healthcheck: bool) -> list[str]:
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    errors: list[str] = []
    if not services:
        return ["services: no services defined"]
    declared_volumes = set((doc.get("volumes") or {}).keys())
    used_volumes: set[str] = set()
    host_ports: dict[str, str] = {}

    for name, svc in services.items():
        where = f"services.{name}"
        if "image" not in svc and "build" not in svc:
            errors.append(f"{where}: needs an image or a build")
        if "image" in svc and "build" not in svc and not _pinned(svc["image"]):
            errors.append(f"{where}.image: {svc['image']!r} is not pinned to a version tag or digest")
        for target, condition in _depends_on(svc).items():
            dep = f"{where}.depends_on.{target}"
            if target not in services:
                errors.append(f"{dep}: no service called {target!r}")
                continue
            if target == name:
                errors.append(f"{dep}: a service cannot depend on itself")
            other = services[target]
            if condition == "service_healthy" and not _has_healthcheck(other, dockerfile_healthcheck):
                errors.append(f"{dep}: waits for service_healthy but {target} has no healthcheck")
            if condition == "service_completed_successfully" and other.get("restart", "no") != "no":
                errors.append(
                    f"{dep}: waits for {target} to complete, but {target} has restart: {other.get('restart')}"
                )
        for i, vol in enumerate(svc.get("volumes") or []):
            source = _volume_source(vol)
            if source is not None:
                used_volumes.add(source)
                if source not in declared_volumes:
                    errors.append(
                        f"{where}.volumes[{i}]: named volume {source!r} is not declared under volumes:"
                    )
        for port in svc.get("ports") or []:
            host = _host_port(port)
            if host and host in host_ports:
                errors.append(f"{where}.ports: host port {host} is also published by {host_ports[host]}")
            elif host:
                host_ports[host] = name
        hc = svc.get("healthcheck") or {}
        test = hc.get("test")
        if isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            errors.append(f"{where}.healthcheck.test: a list must start with CMD, CMD-SHELL or NONE")
        env = svc.get("environment")
        if isinstance(env, list):
            keys = [str(item).split("=", 1)[0] for item in env]
            errors += [
                f"{where}.environment: {k} set twice" for k in sorted({k for k in keys if keys.count(k) > 1})
            ]

    for unused in sorted(declared_volumes - used_volumes):
        errors.append(f"volumes.{unused}: declared but no service mounts it")
    errors += _cycles(services)
    return errors


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest"


def _depends_on(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {k: (v or {}).get("condition", "service_started") for k, v in deps.items()}


def _has_healthcheck(svc: dict[str, Any], dockerfile_healthcheck: bool) -> bool:
    hc = svc.get("healthcheck")
    if hc is not None:
        return not hc.get("disable", False) and bool(hc.get("test")) and hc.get("test") != ["NONE"]
    return "build" in svc and dockerfile_healthcheck  # the image's own HEALTHCHECK applies


def _volume_source(vol: Any) -> str | None:
    """The named volume a mount uses, or None for bind mounts, tmpfs and anonymous volumes."""
    if isinstance(vol, dict):
        return vol.get("source") if vol.get("type", "volume") == "volume" else None
    parts = str(vol).split(":")
    if len(parts) < 2:
        return None
    src = parts[0]
    return None if src.startswith(("/", ".", "~", "$")) else src


def _host_port(port: Any) -> str | None:
    if isinstance(port, dict):
        return str(port["published"]) if port.get("published") else None
    parts = str(port).split(":")
    return parts[-2] if len(parts) >= 2 else None


def _cycles(services: dict[str, dict[str, Any]]) -> list[str]:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    errors: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in _depends_on(services[name]):
            if dep not in services:
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [name, dep]
                errors.append(f"depends_on: cycle {' -> '.join(cycle)}")
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in services:
        if name not in state:
            visit(name, [name])
    return errors


# -- the deployment contract -----------------------------------------------------------------------


def contract_errors(doc: dict[str, Any]) -> list[str]:
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    errors = [f"services: missing {name!r}" for name in REQUIRED_SERVICES if name not in services]
    if errors:
        return errors

    def command(name: str) -> list[str]:
        cmd = services[name].get("command")
        return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd or []]

    if command("api") != API_COMMAND:
        errors.append(f"services.api.command: {command('api')} is not the tested {API_COMMAND}")
    if command("migrate") != MIGRATE_COMMAND:
        errors.append(f"services.migrate.command: {command('migrate')} is not the tested {MIGRATE_COMMAND}")
    redis = " ".join(command("redis"))
    if not re.search(r"(^|\s)--appendonly\s+yes(\s|$)", redis):
        errors.append(
            "services.redis.command: Redis must run with --appendonly yes (queued jobs survive a restart)"
        )
    if "DATABASE_URL" not in _env_keys(services["migrate"]):
        errors.append("services.migrate.environment: DATABASE_URL is not set")

    workers = [n for n in services if n.startswith("worker")]
    storage_mounts: dict[str, str | None] = {}
    for name in ["api", *workers]:
        svc, where = services[name], f"services.{name}"
        missing = [k for k in (*SERVICE_ENV, *OBJECT_STORAGE_ENV) if k not in _env_keys(svc)]
        if missing:
            errors.append(f"{where}.environment: missing {', '.join(missing)}")
        cache_volume = _volume_at(svc, _env(svc, "NNCOMPRESS_CACHE_DIR"))
        if cache_volume is not None:
            errors.append(
                f"{where}.environment.NNCOMPRESS_CACHE_DIR: on the named volume {cache_volume!r}; each "
                "container keeps a cache of its own (a shared one is swept and evicted by every process)"
            )
        if _depends_on(svc).get("migrate") != "service_completed_successfully":
            errors.append(f"{where}.depends_on: must wait for migrate: service_completed_successfully")
        storage_mounts[name] = _storage_volume(svc)
    for name in workers:
        errors += _worker_errors(name, services[name], command(name))
    if len(set(storage_mounts.values())) != 1 or None in storage_mounts.values():
        errors.append(
            "storage: api and workers must mount one named volume holding NNCOMPRESS_STORAGE_DIR; "
            f"got {storage_mounts}"
        )
    return errors


def _worker_errors(name: str, svc: dict[str, Any], cmd: list[str]) -> list[str]:
    where = f"services.{name}"
    if cmd[: len(WORKER_ENTRY)] != WORKER_ENTRY or len(cmd) < len(WORKER_ENTRY) + 1:
        return [f"{where}.command: {cmd} does not start with the tested {WORKER_ENTRY} <queues>"]
    queues = set(cmd[len(WORKER_ENTRY)].split(","))
    errors = []
    if not queues or not queues <= WORKER_QUEUES:
        errors.append(f"{where}.command: queues {sorted(queues)} are not a subset of {sorted(WORKER_QUEUES)}")
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []
    gpu = any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices)
    if "gpu" in queues and not gpu:
        errors.append(
            f"{where}.deploy: serves the gpu queue but reserves no device "
            "(deploy.resources.reservations.devices: driver nvidia, capabilities [gpu])"
        )
    if "gpu" in queues and _build_arg(svc, "TORCH_VARIANT", default="cpu") == "cpu":
        errors.append(f"{where}.build.args.TORCH_VARIANT: a gpu worker needs a CUDA torch build, got cpu")
    if "gpu" not in queues and gpu:
        errors.append(f"{where}.deploy: reserves a GPU but does not serve the gpu queue")
    return errors


def _build_arg(svc: dict[str, Any], name: str, *, default: str) -> str:
    """A build argument's value from ``build.args`` (mapping or ``NAME=value`` list form)."""
    build = svc.get("build")
    args = build.get("args") if isinstance(build, dict) else None
    if isinstance(args, dict):
        return str(args.get(name, default))
    for item in args or []:
        key, _, value = str(item).partition("=")
        if key == name:
            return value
    return default


def _env_keys(svc: dict[str, Any]) -> set[str]:
    env = svc.get("environment") or {}
    return set(env) if isinstance(env, dict) else {str(e).split("=", 1)[0] for e in env}


def _env(svc: dict[str, Any], key: str) -> str | None:
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        return None if env.get(key) is None else str(env[key])
    for item in env:
        k, _, v = str(item).partition("=")
        if k == key:
            return v
    return None


def _storage_volume(svc: dict[str, Any]) -> str | None:
    """The named volume mounted at (a parent of) NNCOMPRESS_STORAGE_DIR, or None."""
    return _volume_at(svc, _env(svc, "NNCOMPRESS_STORAGE_DIR"))


def _volume_at(svc: dict[str, Any], storage: str | None) -> str | None:
    """The named volume mounted at (a parent of) the folder ``storage``, or None."""
    if not storage:
        return None
    for vol in svc.get("volumes") or []:
        source = _volume_source(vol)
        target = vol.get("target") if isinstance(vol, dict) else str(vol).split(":")[1]
        if source and target and (storage == target or storage.startswith(target.rstrip("/") + "/")):
            return source
    return None


# -- the Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    """``(line, INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out: list[tuple[int, str, str]] = []
    buf, start = "", 0
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = lineno
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        out.append((start, instr.upper(), args.strip()))
        buf = ""
    return out


def dockerfile_errors(path: Path) -> list[str]:
    if not path.is_file():
        return [f"{path}: not found"]
    instrs = dockerfile_instructions(path)
    froms = [i for i, (_, instr, _) in enumerate(instrs) if instr == "FROM"]
    if len(froms) < 2:
        return [f"{path}: not multi-stage (one FROM); build tools would ship in the runtime image"]
    errors: list[str] = []
    if not any(instr == "ARG" and args.split("=")[0] == "TORCH_VARIANT" for _, instr, args in instrs):
        errors.append(f"{path}: no ARG TORCH_VARIANT (the CPU/CUDA torch choice)")
    final = instrs[froms[-1] :]
    users = [args for _, instr, args in final if instr == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errors.append(
            f"{path}: the runtime stage must end as a non-root USER, got {users[-1] if users else 'none'}"
        )
    for lineno, instr, args in final:
        if instr == "RUN" and BUILD_TOOLS.search(args):
            errors.append(f"{path}:{lineno}: the runtime stage installs build tools: {args[:80]}")
    cmds = [args for _, instr, args in final if instr == "CMD"]
    cmd = _exec_form(cmds[-1]) if cmds else None
    if cmd != API_COMMAND:
        errors.append(f"{path}: CMD {cmd} is not the tested API command {API_COMMAND}")
    checks = [args for _, instr, args in final if instr == "HEALTHCHECK"]
    port = API_COMMAND[API_COMMAND.index("--port") + 1]
    if not checks or "NONE" in checks[-1].split()[:1] or f":{port}/healthz" not in checks[-1]:
        errors.append(f"{path}: the runtime stage needs a HEALTHCHECK that probes :{port}/healthz")
    errors += _copy_errors(path, instrs)
    return errors


def dockerfile_has_healthcheck(path: Path) -> bool:
    return path.is_file() and any(
        instr == "HEALTHCHECK" and not args.startswith("NONE")
        for _, instr, args in dockerfile_instructions(path)
    )


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except ValueError:
        return None  # shell form: signals would go to /bin/sh, not the server
    return [str(v) for v in value] if isinstance(value, list) else None


def _copy_errors(path: Path, instrs: list[tuple[int, str, str]]) -> list[str]:
    """COPY/ADD sources from the build context must exist and not be excluded by .dockerignore."""
    context = path.parent
    ignore = _dockerignore(context / ".dockerignore")
    errors = []
    for lineno, instr, args in instrs:
        if instr not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if any(w.startswith("--from") for w in shlex.split(args)) or len(words) < 2:
            continue
        for src in words[:-1]:
            rel = src.lstrip("./") or "."
            if not list(context.glob(rel)):
                errors.append(f"{path}:{lineno}: {instr} source {src!r} does not exist in the build context")
            elif _ignored(rel, ignore):
                errors.append(f"{path}:{lineno}: {instr} source {src!r} is excluded by .dockerignore")
    return errors


def _dockerignore(path: Path) -> list[tuple[bool, str]]:
    if not path.is_file():
        return []
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _ignored(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parents) decides."""
    ignored = False
    parents = [rel, *("/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1))]
    for negate, pattern in rules:
        if any(fnmatch.fnmatch(p, pattern.replace("**/", "*")) for p in parents):
            ignored = not negate
    return ignored


# -- entry point ----------------------------------------------------------------------------------


def validate(compose_path: Path, dockerfile: Path | None = None) -> list[str]:
    """Every problem found, one line each; an empty list means valid."""
    dockerfile = dockerfile or compose_path.parent / "Dockerfile"
    try:
        raw = load_compose(compose_path)
    except ValueError as exc:
        return [str(exc)]
    errors: list[str] = []
    doc = interpolate(raw, errors)
    errors += structure_errors(doc, dockerfile_has_healthcheck(dockerfile))
    errors += contract_errors(doc)
    errors += dockerfile_errors(dockerfile)
    return errors


def iter_commands(compose_path: Path) -> Iterator[tuple[str, list[str]]]:
    """``(service, argv)`` for every service with a command (tests run these)."""
    doc = interpolate(load_compose(compose_path), [])
    for name, svc in (doc.get("services") or {}).items():
        cmd = svc.get("command")
        if cmd:
            yield name, shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
