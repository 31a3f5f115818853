"""``nncompress submit``: upload a model (or name an uploaded one), submit a job, optionally wait.

The waiting part (:func:`wait_and_report`) also serves ``status --wait``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from app.cli.client_args import client_parent, open_client, report_error
from app.cli.job_report import ProgressBar, format_job
from nncompress.cli.inputs import input_shape, read_config_list
from nncompress.client import Client, ServiceError, WaitTimeout
from nncompress.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``submit`` to the ``nncompress`` parser."""
    p = subparsers.add_parser(
        "submit",
        parents=[client_parent()],
        help="upload a model and submit a compression job",
        description="Uploads a weights file (or reuses an uploaded model) and submits a compression job.",
        epilog=(
            "examples:\n"
            "  nncompress submit --model net.safetensors --arch mnist_net --config config.json --wait\n"
            "  nncompress submit --model model.onnx --config config.json      # ONNX names its own layers\n"
            "  nncompress submit --model ./bert-finetuned/ --config ffn.json  # a save_pretrained folder\n"
            "  nncompress submit --model-id 3f2a... --arch mnist_net --pruner fpgm \\\n"
            '      --config \'[{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]\' --input-shape 1,1,28,28\n'
            "exit status: 0 once submitted (with --wait: 0 only if the job succeeded)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model",
        type=Path,
        help="model to upload: weights (with --arch), ONNX, a Hugging Face save_pretrained folder "
        "(zipped for you) or its zip, a zip of an ONNX model with its external data",
    )
    src.add_argument("--model-id", help="a model already uploaded (skips the upload)")
    p.add_argument(
        "--arch",
        help="architecture of a weights file: mnist_net, torchvision/resnet50, timm/resnet18 "
        "(only with safetensors or state_dict weights; other files describe their own model)",
    )
    p.add_argument(
        "--format",
        help="format the server must find (safetensors|state_dict|onnx|onnx_zip|hf_dir|pickle)",
    )
    p.add_argument("--config", required=True, help="config_list: a JSON file, or the JSON text itself")
    p.add_argument("--pruner", default="l1norm", help="pruner name (default l1norm)")
    p.add_argument(
        "--input-shape",
        type=input_shape,
        help="example input shape with batch dim, e.g. 1,1,28,28 (default: arch's)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the job runs")
    p.add_argument("--no-speedup", dest="speedup", action="store_false", help="keep masks, do not shrink")
    p.add_argument("--no-onnx", dest="export_onnx", action="store_false", help="skip the ONNX export")
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the speedup equivalence check"
    )
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="show progress until the job ends")
    p.add_argument("--wait-timeout", type=float, default=None, help="with --wait: give up after this many s")
    p.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> int:
    try:
        config_list = read_config_list(args.config)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    with open_client(args) as client:  # closes its connections when the command ends
        try:
            if args.model is not None:
                # The server tells weights (which need --arch) from self-describing files by their
                # bytes, and validates the config against the model that was uploaded, never another.
                with _upload_source(args.model) as source:
                    model = client.upload_model(source, architecture=args.arch, format=args.format)
                print(
                    f"uploaded {args.model.name}: model {model['id']} ({model['size_bytes']} bytes)",
                    file=sys.stderr,
                )
                model_id = model["id"]
            else:
                model_id = args.model_id
            job = client.create_job(
                model_id,
                config_list,
                pruner=args.pruner,
                speedup=args.speedup,
                device=args.device,
                input_shape=args.input_shape,
                export_onnx=args.export_onnx,
                verify=args.verify,
                idempotency_key=args.idempotency_key,
            )
            print(job["id"])
            if not args.wait:
                return 0
            return wait_and_report(client, job["id"], args.wait_timeout)
        except ServiceError as exc:
            return report_error(exc)


@contextlib.contextmanager
def _upload_source(path: Path) -> Iterator[Path]:
    """The file to upload: ``path`` itself, or a zip of it when it is a model folder."""
    if not path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="nncompress-upload-") as tmp:
        archive = Path(tmp) / f"{path.name or 'model'}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # weights barely compress
            for child in sorted(path.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    zf.write(child, child.name)
        yield archive


def wait_and_report(client: Client, job_id: str, timeout: float | None) -> int:
    """Shows the job's progress on stderr until it ends, then prints its summary.

    Args:
        client: an open client.
        job_id: the job to follow.
        timeout: seconds to give up after (None: wait as long as it runs).

    Returns:
        The exit status: 0 only if the job succeeded.
    """
    bar = ProgressBar(sys.stderr)
    try:
        job = client.wait(job_id, on_progress=bar.update, deadline=timeout)
    except WaitTimeout as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(format_job(job))
    return 0 if job["status"] == "succeeded" else 1
