"""The engine must stay a library: importing it pulls in none of the service's stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("fastapi", "celery", "sqlalchemy", "starlette", "redis", "alembic", "pydantic_settings")


def test_engine_imports_no_service_packages() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import nncompress\n"
        "for m in pkgutil.walk_packages(nncompress.__path__, 'nncompress.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"engine imported service packages: {out.stdout.strip()}"


@pytest.mark.parametrize("name", ["mnist_net"])
def test_builtin_architecture_runs(name: str) -> None:
    from nncompress.models import get

    arch = get(name)
    model = arch.build().eval()
    out = model(arch.example_input(2))
    assert out.shape[0] == 2


def test_seed_net_parameter_count() -> None:
    from nncompress.models.mnist import Net

    assert sum(p.numel() for p in Net().parameters()) == 431_080
