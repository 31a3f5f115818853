"""The README's demo, end to end, in embedded mode (the embedded E2E test of the service).

``python examples/demo.py`` starts ``nncompress serve`` (SQLite, local files, embedded worker), uploads the
shipped MNIST weights, runs the seed's config_list through the service, downloads the artifacts, reloads the
result without pickle and measures it. ``scripts/demo.sh`` is that command after ``scripts/bootstrap.sh``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What the shipped weights score on the shipped subset (nncompress/data/README.md).
SHIPPED_SUBSET_ACCURACY = 0.975


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    out_dir, summary_path = tmp_path / "artifacts", tmp_path / "summary.json"

    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "demo.py"),
            "--out",
            str(out_dir),
            "--summary",
            str(summary_path),
        ],
        cwd=tmp_path,  # the demo must not need the repository as its working directory
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "succeeded"
    assert set(summary["artifacts"]) >= {"model.safetensors", "manifest.json", "model.onnx", "report.json"}

    # The job's measured metrics describe the model the demo reloaded from the artifacts.
    metrics = summary["metrics"]
    assert summary["params_before"] == metrics["before"]["params"] == 431_080
    assert summary["params_after"] == metrics["after"]["params"]
    assert summary["params_after"] < summary["params_before"] * 0.5  # half the channels of conv1/conv2/fc1

    assert summary["accuracy_before"] == SHIPPED_SUBSET_ACCURACY
    # Pruning without fine-tuning costs some accuracy, never all of it: a broken speedup lands near 10%.
    assert summary["accuracy_after"] > 0.9
    assert summary["accuracy_onnx"] == pytest.approx(summary["accuracy_after"], abs=0.002)

    # The artifacts on disk reload without pickle and give the demo's numbers.
    from nncompress.data import load_mnist_subset
    from nncompress.io import load_compressed

    model = load_compressed(out_dir)
    images, labels = load_mnist_subset()
    assert float((model(images).argmax(1) == labels).float().mean()) == pytest.approx(
        summary["accuracy_after"]
    )

    # The table was printed and the server was stopped (its port no longer answers).
    assert re.search(r"^params\s+431,080\s+", result.stdout, flags=re.M), result.stdout
    assert "server stopped" in result.stdout
    port = int(re.search(r"serve --port (\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))


def test_demo_script_bootstraps_then_runs_the_module() -> None:
    # scripts/demo.sh is what a newcomer runs: it must install first, then run this same module.
    script = (REPO / "scripts" / "demo.sh").read_text().splitlines()
    commands = [line for line in script if line.strip() and not line.lstrip().startswith("#")]
    bootstrap = next(i for i, line in enumerate(commands) if "scripts/bootstrap.sh" in line)
    assert bootstrap < commands.index('exec .venv/bin/python examples/demo.py "$@"')
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "demo.sh")]).returncode == 0
