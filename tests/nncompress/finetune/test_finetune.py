"""Fine-tuning a pruned seed Net on the shipped MNIST subset: recovery, KD, determinism, resume, cancel."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError
from nncompress.finetune import (
    CHECKPOINT_FILE,
    FinetuneCancelled,
    FinetuneProgress,
    FinetuneSpec,
    evaluate,
    finetune,
)
from tests.nncompress.finetune.factories import mnist_split, pruned_net, trained_net

KD = {"weight": 0.5, "temperature": 4.0}


def _equal_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_accuracy_rises_with_distillation_and_is_recorded() -> None:
    train, val = mnist_split()
    teacher = trained_net()
    model = pruned_net(0.8)
    before = evaluate(model, val)
    seen: list[FinetuneProgress] = []
    spec = FinetuneSpec(epochs=2, batch_size=32, lr=0.01, distillation=KD)  # type: ignore[arg-type]
    result = finetune(model, train, val, spec, teacher=teacher, progress=seen.append)
    assert result.initial == before
    assert result.final.top1 > before.top1 + 0.1, (before, result.final)
    assert result.distillation and len(result.epochs) == 2
    assert all(r.train_kd is not None and r.train_kd > 0 for r in result.epochs)
    assert [r.epoch for r in result.epochs] == [1, 2] and result.final == result.epochs[-1].val
    assert evaluate(model, val) == result.final, "the returned record describes the returned model"
    # Progress: monotone fraction up to 1, epoch records delivered at the end of each epoch.
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [p.record.epoch for p in seen if p.record is not None] == [1, 2]
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in seen)
    assert result.to_dict()["epochs"][1]["val_top1"] == result.final.top1


def test_same_seed_same_weights_on_cpu() -> None:
    train, val = mnist_split(400)
    spec = FinetuneSpec(epochs=1, batch_size=16, optimizer="adam", lr=1e-3, schedule="cosine", seed=7)
    a = finetune(pruned_net(), train, val, spec).model
    b = finetune(pruned_net(), train, val, spec).model
    assert _equal_weights(a, b)
    c = finetune(pruned_net(), train, val, FinetuneSpec.from_dict({**spec.to_dict(), "seed": 8})).model
    assert not _equal_weights(a, c), "the seed changes the batch order"


def test_global_rng_untouched() -> None:
    train, val = mnist_split(200)
    model = pruned_net()
    torch.manual_seed(123)
    expected = torch.rand(2)
    torch.manual_seed(123)
    finetune(model, train, val, FinetuneSpec(epochs=1, batch_size=50))
    assert torch.equal(torch.rand(2), expected)


def test_resume_after_interruption_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    train, val = mnist_split(400)
    teacher = trained_net()
    spec = FinetuneSpec(epochs=3, batch_size=32, lr=0.02, schedule="step", gamma=0.5, distillation=KD)  # type: ignore[arg-type]
    full = finetune(pruned_net(), train, val, spec, teacher=teacher, checkpoint_dir=tmp_path / "a")

    calls = 0
    steps = math.ceil(len(train) / 32)

    def stop_in_epoch_two() -> bool:
        nonlocal calls
        calls += 1
        return calls == steps + 3  # polled before every step: this is step 3 of epoch 2

    with pytest.raises(FinetuneCancelled) as info:
        finetune(
            pruned_net(),
            train,
            val,
            spec,
            teacher=teacher,
            should_stop=stop_in_epoch_two,
            checkpoint_dir=tmp_path / "b",
        )
    assert info.value.code == "cancelled"
    assert info.value.context == {"epoch": 2, "step": 3, "finished_epochs": 1}
    assert (tmp_path / "b" / CHECKPOINT_FILE).is_file()

    resumed = finetune(pruned_net(), train, val, spec, teacher=teacher, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from_epoch == 1
    assert _equal_weights(resumed.model, full.model)
    assert [r.val for r in resumed.epochs] == [r.val for r in full.epochs]
    assert resumed.initial == full.initial


def test_checkpoint_of_another_run_is_ignored(tmp_path: Path) -> None:
    train, val = mnist_split(200)
    spec1, spec2 = (
        FinetuneSpec(epochs=1, batch_size=50, seed=1),
        FinetuneSpec(epochs=1, batch_size=50, seed=2),
    )
    finetune(pruned_net(), train, val, spec1, checkpoint_dir=tmp_path)
    other = finetune(pruned_net(), train, val, spec2, checkpoint_dir=tmp_path)
    assert other.resumed_from_epoch == 0, "another spec"
    finished = finetune(pruned_net(), train, val, spec2, checkpoint_dir=tmp_path)
    assert finished.resumed_from_epoch == 1 and _equal_weights(finished.model, other.model)
    changed = pruned_net()
    with torch.no_grad():
        changed.fc2.bias.add_(1.0)
    assert finetune(changed, train, val, spec2, checkpoint_dir=tmp_path).resumed_from_epoch == 0, (
        "same shapes, other starting weights"
    )
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"garbage")
    assert finetune(pruned_net(), train, val, spec2, checkpoint_dir=tmp_path).resumed_from_epoch == 0


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    train, val = mnist_split(200)
    finetune(
        pruned_net(),
        train,
        val,
        FinetuneSpec(epochs=1, batch_size=50, schedule="cosine"),
        checkpoint_dir=tmp_path,
    )
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng_cpu", "sampler", "records"} <= set(state)


def test_cosine_schedule_ends_near_zero() -> None:
    train, val = mnist_split(200)
    result = finetune(
        pruned_net(), train, val, FinetuneSpec(epochs=2, batch_size=50, schedule="cosine", lr=0.1)
    )
    assert result.epochs[0].lr == pytest.approx(0.05, rel=1e-6) and result.epochs[1].lr == pytest.approx(
        0.0, abs=1e-12
    )


def test_distillation_without_teacher_is_a_config_error() -> None:
    train, val = mnist_split(100)
    with pytest.raises(ConfigError, match="needs the teacher"):
        finetune(pruned_net(), train, val, FinetuneSpec(distillation=KD))  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_asked_without_cuda_is_a_config_error() -> None:
    train, val = mnist_split(100)
    with pytest.raises(ConfigError, match="CUDA is not available") as info:
        finetune(pruned_net(), train, val, FinetuneSpec(device="cuda"))
    assert info.value.context["key"] == "device"
