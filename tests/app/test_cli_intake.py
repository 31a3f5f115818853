"""`nncompress submit --model FILE` against a real server: self-describing files need no --arch, and
the config is checked against the uploaded model itself (jobs stay queued: no worker here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from nncompress.client import Client
from tests.app.model_files import onnx_bytes
from tests.app.test_client_wait import serve  # noqa: F401 - the fixture


def submit(client: Client, *argv: str) -> int:
    from nncompress.cli import main

    return main(["submit", "--server", client.base_url, *argv])


def test_submit_onnx_without_arch_checks_its_own_layers(
    serve: Callable[..., tuple[Client, FastAPI]],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, _ = serve()
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_bytes())
    good = json.dumps([{"sparse_ratio": 0.5, "op_names": ["conv1"]}])
    assert submit(client, "--model", str(model), "--config", good) == 0
    job_id = capsys.readouterr().out.strip()
    assert client.get_job(job_id)["spec"]["input_shape"] == [1, 3, 16, 16]

    # mnist_net has a conv2 too, but this model is checked, not mnist_net: a wrong name is refused.
    bad = json.dumps([{"sparse_ratio": 0.5, "op_names": ["fc1"]}])
    assert submit(client, "--model", str(model), "--config", bad) != 0
    assert "fc1" in capsys.readouterr().err
    # and --arch with an ONNX file is refused instead of checking the config against mnist_net
    assert submit(client, "--model", str(model), "--arch", "mnist_net", "--config", good) != 0
    assert "architecture" in capsys.readouterr().err


def test_submit_a_model_folder_zips_it(
    serve: Callable[..., tuple[Client, FastAPI]],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transformers import BertConfig, BertModel

    folder = tmp_path / "bert"
    config = BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    client, _ = serve()
    ffn = json.dumps([{"sparse_ratio": 0.5, "op_names": ["encoder.layer.0.intermediate.dense"]}])
    assert submit(client, "--model", str(folder), "--config", ffn) == 0
    job: dict[str, Any] = client.get_job(capsys.readouterr().out.strip())
    assert job["spec"]["input_dtype"] == "int64"
    assert client.get_model(job["model_id"])["format"] == "hf_dir"
