"""Engine subcommands: ``models``, ``inspect`` (preflight) and ``prune`` (the whole pipeline), run locally.

They share one way of naming a model: ``--arch`` picks an architecture from the registry
(``nncompress models`` lists them) and ``--weights`` loads trained weights onto it
(safetensors or a ``torch.save`` state_dict); an ONNX file may be given as ``--weights`` alone.
Without ``--weights`` the architecture's random initialisation is used, which is enough to try a
config_list out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nncompress.cli.inputs import input_shape, read_config_list
from nncompress.errors import ConfigError, ModelLoadError
from nncompress.tables import render_table

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported inside the handlers: building the parser must stay cheap, because every
# `nncompress` command (the service client ones too) builds it.

_EXAMPLE_CONFIG = (
    '[{"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]}, {"exclude": true, "op_names": ["fc2"]}]'
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``models``, ``inspect`` and ``prune`` to the ``nncompress`` parser."""
    _add_models(subparsers)
    _add_inspect(subparsers)
    _add_prune(subparsers)


# -- models -----------------------------------------------------------------------------------------


def _add_models(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "models",
        help="list the architectures --arch accepts",
        description="Lists the architectures in the registry, with the input each one expects.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    from nncompress.models import get, names

    rows: list[dict[str, Any]] = []
    for name in names():
        arch = get(name)
        rows.append(
            {
                "name": name,
                "input_shape": list(arch.input_shape),
                "input_dtype": str(arch.input_dtype).removeprefix("torch."),
                "description": arch.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [["name", "input", "description"]]
    table += [
        [r["name"], "×".join(map(str, r["input_shape"])) + f" {r['input_dtype']}", r["description"]]
        for r in rows
    ]
    print(_render(table, numeric=False))
    return 0


# -- inspect ----------------------------------------------------------------------------------------


def _add_inspect(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "inspect",
        help="show what a config_list would prune, without pruning (preflight)",
        description=(
            "Resolves a config_list against a model and prints, per selected layer, its shape, the target "
            "sparsity and the channels left; then the coupled channel groups (residual adds, concats, "
            "depthwise convs) and any op the speedup cannot handle. Nothing is changed or written."
        ),
        epilog=(
            "examples:\n"
            "  nncompress inspect --arch mnist_net --config config.json\n"
            f"  nncompress inspect --arch mnist_net --config '{_EXAMPLE_CONFIG}'\n"
            "  nncompress inspect --arch resnet18_cifar --config config.json --pruner fpgm --json\n"
            "\n"
            f"config.json holds an NNI config_list, e.g.\n  {_EXAMPLE_CONFIG}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(p)
    p.add_argument("--pruner", default="l1norm", help="pruner the channel counts assume (default l1norm)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from nncompress.inspection import preflight

    model, example = _load(args)
    report = preflight(model, read_config_list(args.config), example, pruner=args.pruner)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_table())
    return 0


# -- prune ------------------------------------------------------------------------------------------


def _add_prune(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "prune",
        help="prune a model, shrink it, verify it and write the artifacts",
        description=(
            "Runs the whole pipeline: prune with the config_list, turn the masks into a smaller model "
            "(speedup), check it computes what the masked model computes, measure both models (params, "
            "bytes, MACs, latency) and write into --out: model.safetensors + manifest.json (reload with "
            "nncompress.load_compressed, no pickle), model.onnx and report.json."
        ),
        epilog=(
            "examples:\n"
            "  nncompress prune --arch mnist_net --config config.json --out out/\n"
            "  nncompress prune --arch mnist_net --weights mnist.safetensors --config config.json \\\n"
            "      --pruner fpgm --out out/ --no-onnx\n"
            "  nncompress prune --arch mnist_net --config config.json --pruner taylorfo --data mnist_subset "
            "--out out/\n"
            "\n"
            "pruners: level (single weights, no speedup), l1norm, l2norm, fpgm (from weights);\n"
            "slim, taylorfo, apoz, mean_activation (from data: pass --data).\n"
            "\n"
            f"config.json holds an NNI config_list, e.g.\n  {_EXAMPLE_CONFIG}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(p)
    p.add_argument("--pruner", default="l1norm", help="pruner name (default l1norm)")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the artifacts (created if missing)"
    )
    p.add_argument(
        "--no-speedup", action="store_true", help="keep the masked model's shapes (zeros, no shrink)"
    )
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument("--no-verify", action="store_true", help="skip the equivalence check (not recommended)")
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where latency is measured"
    )
    p.add_argument(
        "--latency-runs", type=int, default=20, metavar="N", help="timed passes per batch size (default 20)"
    )
    p.add_argument(
        "--latency-dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype latency is measured in, on a converted copy (default float32)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for example inputs (default 0)")
    p.add_argument(
        "--data",
        metavar="NAME",
        help="data for the data-driven pruners and for accuracy before/after "
        "(mnist_subset: the 1,000 MNIST test images shipped with nncompress)",
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    p.set_defaults(handler=_prune)


def _prune(args: argparse.Namespace) -> int:
    from nncompress.pipeline import JobSpec, run_job
    from nncompress.pipeline.spec import DATA_DRIVEN_PRUNERS
    from nncompress.progress import ConsoleProgress

    # These rank channels from activations or gradients, so they cannot run without --data.
    if args.pruner in DATA_DRIVEN_PRUNERS and args.data is None:
        raise ConfigError(
            f"the {args.pruner} pruner ranks channels from data: add --data mnist_subset (the data set "
            "shipped with nncompress), or call nncompress.pipeline.run_job(..., data=...) from Python",
            key="data",
        )
    model, example = _load(args)
    spec = JobSpec.from_dict(
        {
            "pruner": args.pruner,
            "config_list": read_config_list(args.config),
            "speedup": not args.no_speedup,
            "device": args.device,
            "input_shape": list(example.shape),
            "export_onnx": not args.no_onnx,
            "verify": not args.no_verify,
            "seed": args.seed,
            "latency_runs": args.latency_runs,
            "dataset": args.data,
            "latency_dtype": args.latency_dtype,
        }
    )
    result = run_job(spec, model=model, architecture=args.arch, out_dir=args.out, progress=ConsoleProgress())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(_summary(result.to_dict()))
    return 0


# -- shared -----------------------------------------------------------------------------------------


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", metavar="NAME", help="architecture from the registry (see `nncompress models`)")
    p.add_argument(
        "--weights",
        metavar="FILE",
        type=Path,
        help="trained weights for --arch (safetensors or a torch.save state_dict), or an ONNX model",
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="CONFIG",
        help="config_list: a JSON file, or the JSON itself",
    )
    p.add_argument(
        "--input-shape",
        metavar="SHAPE",
        type=input_shape,
        help="example input shape with the batch dimension, e.g. 1,1,28,28 (default: the architecture's)",
    )


def _load(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor]:
    import torch

    from nncompress.io import load_model
    from nncompress.models import get

    if args.arch is None and args.weights is None:
        raise ConfigError(
            "name a model: --arch NAME (see `nncompress models`) and/or --weights FILE", key="arch"
        )
    arch = None
    if args.arch is not None:
        try:
            arch = get(args.arch)
        except KeyError as exc:
            raise ModelLoadError(str(exc.args[0]), architecture=args.arch) from None
    if args.weights is not None:
        model = load_model(args.weights, architecture=args.arch)
    else:
        assert arch is not None  # checked above: one of the two is given
        model = arch.build()
    model.eval()
    shape = args.input_shape or (arch.input_shape if arch is not None else None)
    if shape is None:
        raise ConfigError(
            "--input-shape is needed for a model without --arch, e.g. --input-shape 1,3,224,224",
            key="input_shape",
        )
    generator = torch.Generator().manual_seed(getattr(args, "seed", 0))
    if arch is not None and arch.input_dtype == torch.long:
        vocab = int(arch.kwargs.get("vocab_size", 100))  # type: ignore[call-overload]
        example = torch.randint(0, vocab, tuple(shape), generator=generator)
    else:
        example = torch.randn(tuple(shape), generator=generator)
    return model, example


def _summary(report: dict[str, Any]) -> str:
    before, after = report["metrics"]["before"], report["metrics"]["after"]
    rows = [["", "before", "after", "after/before"]]

    def add(label: str, b: float | None, a: float | None, fmt: str) -> None:
        if b is None or a is None:
            return
        ratio = f"{a / b:.3f}" if b else "-"
        rows.append([label, format(b, fmt), format(a, fmt), ratio])

    add("parameters", before["params"], after["params"], ",")
    add("nonzero parameters", before["nonzero_params"], after["nonzero_params"], ",")
    add("state_dict bytes", before["state_dict_bytes"], after["state_dict_bytes"], ",")
    add("MACs (batch 1)", before["macs"], after["macs"], ",")
    for stats_b, stats_a in zip(before["latency"], after["latency"], strict=True):
        add(
            f"latency ms, batch {stats_b['batch_size']} (median)",
            stats_b["median_ms"],
            stats_a["median_ms"],
            ".3f",
        )
    add("accuracy", before.get("accuracy"), after.get("accuracy"), ".4f")
    lines = [_render(rows), "", f"latency measured on {after['device']} ({after['latency_method']})"]
    changed = [
        layer
        for layer in report["layers"]
        if (layer["in_before"], layer["out_before"]) != (layer["in_after"], layer["out_after"])
    ]
    if changed:
        lines += [
            "",
            _render(
                [["layer", "in", "out"]]
                + [
                    [
                        layer["name"],
                        f"{layer['in_before']}→{layer['in_after']}",
                        f"{layer['out_before']}→{layer['out_after']}",
                    ]
                    for layer in changed
                ]
            ),
        ]
    if report["notes"]:
        lines += ["", *(f"note: {note}" for note in report["notes"])]
    lines += ["", "artifacts:"] + [
        f"  {a['path']}  {a['size_bytes']:,} bytes  sha256 {a['sha256'][:16]}…" for a in report["artifacts"]
    ]
    return "\n".join(line for line in lines).strip("\n")


def _render(rows: list[list[Any]], *, numeric: bool = True) -> str:
    """A table whose columns after the first are right-aligned numbers unless ``numeric`` is False."""
    return render_table(rows, align_right=range(1, len(rows[0])) if numeric else ())
