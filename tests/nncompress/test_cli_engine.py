"""The engine subcommands, run through the real dispatcher: models, inspect, prune."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nncompress.cli import main
from nncompress.io import load_compressed
from nncompress.models.mnist import Net

SEED_CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SEED_CONFIG))
    return path


def test_models_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "mnist_net" in out and "1×1×28×28 float32" in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "mnist_net", "input_shape": [1, 1, 28, 28], "input_dtype": "float32"}.items() <= next(
        r for r in rows if r["name"] == "mnist_net"
    ).items()


def test_inspect_prints_the_preflight_table(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--arch", "mnist_net", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "20→10" in out and "500→250" in out
    assert main(["inspect", "--arch", "mnist_net", "--config", json.dumps(SEED_CONFIG), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in report["layers"]] == ["conv1", "conv2", "fc1"]


def test_prune_writes_artifacts_and_prints_a_table(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    net = Net().eval()
    weights = tmp_path / "weights.safetensors"
    save_file(dict(net.state_dict()), str(weights))
    out_dir = tmp_path / "out"
    code = main(
        [
            "prune",
            "--arch",
            "mnist_net",
            "--weights",
            str(weights),
            "--config",
            str(config_file),
            "--pruner",
            "l1norm",
            "--out",
            str(out_dir),
            "--latency-runs",
            "2",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "431,080" in captured.out and "109,295" in captured.out  # parameters before / after
    assert "[100%] exporting" in captured.err  # plain progress lines: stderr is not a TTY here
    report = json.loads((out_dir / "report.json").read_text())
    for artifact in report["artifacts"]:
        assert hashlib.sha256(Path(artifact["path"]).read_bytes()).hexdigest() == artifact["sha256"]
    # The weights given were used: the 10 kept conv1 filters are the original ones.
    kept = report["kept"]["conv1"]["out"]
    reloaded = load_compressed(out_dir)
    assert torch.equal(reloaded.conv1.weight, net.conv1.weight[kept])


def test_prune_without_speedup_or_onnx(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code = main(
        [
            "prune",
            "--arch",
            "mnist_net",
            "--config",
            str(config_file),
            "--out",
            str(out_dir),
            "--no-speedup",
            "--no-onnx",
            "--latency-runs",
            "1",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["speedup_applied"] is False
    assert report["metrics"]["after"]["params"] == report["metrics"]["before"]["params"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["manifest.json", "model.safetensors", "report.json"]


def test_data_driven_pruner_with_the_shipped_data(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nncompress.data import mnist_net_weights_path

    code = main(
        [
            "prune",
            "--arch",
            "mnist_net",
            "--weights",
            str(mnist_net_weights_path()),
            "--config",
            str(config_file),
            "--pruner",
            "taylorfo",
            "--data",
            "mnist_subset",
            "--out",
            str(tmp_path),
            "--no-onnx",
            "--latency-runs",
            "1",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    # The shipped weights score 98.17% on the full test split; the shipped subset is part of it.
    assert report["metrics"]["before"]["accuracy"] > 0.95
    assert 0.0 < report["metrics"]["after"]["accuracy"] <= 1.0
    assert report["metrics"]["after"]["params"] == 109_295


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["inspect", "--arch", "no_such", "--config", "[]"],
            "error [model_load_failed]: unknown architecture",
        ),
        (["inspect", "--config", "[]"], "error [invalid_config]: name a model"),
        (["inspect", "--arch", "mnist_net", "--config", "[{oops"], "not valid JSON"),
        (["inspect", "--arch", "mnist_net", "--config", "missing.json"], "cannot read the config file"),
        (["prune", "--arch", "mnist_net", "--config", "[]", "--out", "o", "--pruner", "taylorfo"], "--data"),
    ],
)
def test_errors_print_a_code_and_exit_1(
    argv: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert expected in capsys.readouterr().err


def test_bad_input_shape_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inspect", "--arch", "mnist_net", "--config", "[]", "--input-shape", "1,a"])
    assert info.value.code == 2
    assert "1,1,28,28" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inspect", "prune", "models"])
def test_help_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert f"nncompress {command}" in out
    if command != "models":
        assert "examples:" in out and "--config" in out


def test_console_progress_bar_on_a_tty_and_lines_otherwise() -> None:
    import io

    from nncompress.progress import ConsoleProgress

    lines = io.StringIO()
    show = ConsoleProgress(lines, tty=False)
    show("pruning", 5.0, "l1norm")
    show("pruning", 5.0, "l1norm")  # repeats are not printed twice
    show("exporting", 100.0, "done")
    assert lines.getvalue() == "[  5%] pruning: l1norm\n[100%] exporting: done\n"

    bar = io.StringIO()
    show = ConsoleProgress(bar, tty=True, width=10)
    show("speedup", 50.0)
    show("exporting", 100.0, "done")
    text = bar.getvalue()
    assert "\r" in text and "[#####-----]  50%" in text and "[##########] 100%" in text
    assert text.endswith("exporting: done\n")


def test_inspect_and_prune_an_onnx_file_without_arch(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nncompress.io import export_onnx

    torch.manual_seed(0)
    export_onnx(Net().eval(), torch.randn(1, 1, 28, 28), tmp_path / "net.onnx")
    base = [
        "--weights",
        str(tmp_path / "net.onnx"),
        "--config",
        str(config_file),
        "--input-shape",
        "1,1,28,28",
    ]
    assert main(["inspect", *base]) == 0
    assert "500→250" in capsys.readouterr().out
    assert main(["prune", *base, "--out", str(tmp_path / "out"), "--latency-runs", "1", "--no-onnx"]) == 0
    out = capsys.readouterr().out
    assert "109,295" in out and "no registry architecture" in out
    # Without --arch the input shape cannot be guessed.
    assert main(["inspect", "--weights", str(tmp_path / "net.onnx"), "--config", str(config_file)]) == 1
    assert "--input-shape" in capsys.readouterr().err
