"""Scheduled pruning (Linear, AGP) of the trained seed Net on the shipped MNIST subset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nncompress.errors import ConfigError
from nncompress.finetune import FinetuneCancelled, FinetuneSpec, evaluate
from nncompress.pruners.scheduled import (
    AGPPruner,
    LinearPruner,
    ScheduledProgress,
    schedule_fractions,
    scheduled_prune,
)
from nncompress.speedup import apply_kept_indices
from tests.nncompress.finetune.factories import EXAMPLE, mnist_split, seed_config, trained_net

FT = FinetuneSpec(epochs=1, batch_size=32, lr=0.01)


def test_schedule_fractions() -> None:
    assert schedule_fractions("linear", 4) == [0.25, 0.5, 0.75, 1.0]
    agp = schedule_fractions("agp", 4)
    assert agp == pytest.approx([1 - 0.75**3, 1 - 0.5**3, 1 - 0.25**3, 1.0])
    gaps = [b - a for a, b in zip([0.0, *agp], agp, strict=False)]
    assert gaps == sorted(gaps, reverse=True), "AGP prunes most at the start"
    with pytest.raises(ConfigError, match="schedule must be one of linear, agp"):
        schedule_fractions("cubic", 3)
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        schedule_fractions("agp", 0)


@pytest.mark.parametrize("speedup", [True, False])
def test_agp_steps_recorded_with_increasing_sparsity(speedup: bool) -> None:
    train, val = mnist_split(500)
    net = trained_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen: list[ScheduledProgress] = []
    result = scheduled_prune(
        net, seed_config(0.75), schedule="agp", steps=3, finetune_spec=FT, train=train, val=val,
        example_inputs=EXAMPLE, speedup=speedup, progress=seen.append,
    )  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the input model is untouched"
    assert [s.step for s in result.steps] == [1, 2, 3] and result.chosen_step == 3
    sparsity = [s.sparsity for s in result.steps]
    assert sparsity == sorted(sparsity) and sparsity[0] > 0.4
    # The last step reaches the config's target: 75% of conv1/conv2/fc1 output channels (20+50+500).
    assert sparsity[-1] == pytest.approx(1 - (5 + 13 + 125) / 570, abs=1e-9)
    nonzero = [s.nonzero_params for s in result.steps]
    assert nonzero == sorted(nonzero, reverse=True)
    sizes = [s.weights_bytes for s in result.steps]
    if speedup:
        assert [s.params for s in result.steps] == nonzero, "shrunk, not masked"
        assert result.masks is None
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 4 * nonzero[0] / 2
        # The composed kept indices rebuild the final shapes on a fresh original: the artifact path.
        assert result.kept is not None
        rebuilt = apply_kept_indices(trained_net(), result.kept, EXAMPLE)
        rebuilt.load_state_dict(result.model.state_dict())
        with torch.no_grad():
            assert torch.equal(rebuilt.eval()(val.x[:16]), result.model(val.x[:16]))
    else:
        assert all(s.params == 431080 for s in result.steps) and result.masks is not None
        assert result.kept is None
        assert len(set(sizes)) == 1 and sizes[0] > 4 * 431080, "masked weights are stored dense"
    assert evaluate(result.model, val) == result.steps[-1].val
    assert all(len(s.finetune) == 1 for s in result.steps)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [p.record.step for p in seen if p.record is not None] == [1, 2, 3]


def test_accuracy_budget_stops_at_the_last_step_within_it() -> None:
    train, val = mnist_split(400)
    # Almost no recovery (tiny lr), aggressive target: accuracy falls as the steps go on.
    spec = FinetuneSpec(epochs=1, batch_size=64, lr=1e-5)
    common = dict(
        schedule="linear", steps=4, finetune_spec=spec, train=train, val=val, example_inputs=EXAMPLE
    )
    full = scheduled_prune(trained_net(), seed_config(0.95), **common)  # type: ignore[arg-type]
    drops = [s.accuracy_drop for s in full.steps]
    # The first step whose drop clearly exceeds every earlier one; the budget falls between them.
    first_over = next(i for i in range(1, len(drops)) if drops[i] > max(drops[:i]) + 1.0)
    assert first_over < len(drops) - 1, f"the case must force an early stop: {drops}"
    budget = (max(drops[:first_over]) + drops[first_over]) / 2
    result = scheduled_prune(trained_net(), seed_config(0.95), accuracy_budget=budget, **common)  # type: ignore[arg-type]
    assert len(result.steps) == first_over + 1, "no step runs after the first one over budget"
    assert result.chosen_step == first_over and result.stopped_early
    assert [s.within_budget for s in result.steps] == [True] * first_over + [False]
    assert evaluate(result.model, val) == result.steps[first_over - 1].val, "the chosen step's model"
    assert result.steps[first_over - 1].val.top1 >= result.baseline.top1 - budget / 100


def test_budget_not_met_by_any_step_returns_the_original() -> None:
    train, val = mnist_split(300)
    spec = FinetuneSpec(epochs=1, batch_size=64, lr=1e-5)
    result = scheduled_prune(
        trained_net(), seed_config(0.95), schedule="agp", steps=2, finetune_spec=spec, train=train, val=val,
        example_inputs=EXAMPLE, accuracy_budget=0.0,
    )  # fmt: skip
    assert result.chosen_step == 0 and len(result.steps) == 1 and result.stopped_early
    assert evaluate(result.model, val) == result.baseline


def test_nni_style_classes_and_distillation() -> None:
    train, val = mnist_split(300)
    spec = FinetuneSpec(epochs=1, batch_size=32, lr=0.01, distillation={"weight": 0.5})  # type: ignore[arg-type]
    pruner = LinearPruner(
        trained_net(), seed_config(0.5), pruning_algorithm="l2norm", total_iteration=2, finetune_spec=spec,
        train=train, val=val, dummy_input=EXAMPLE,
    )  # fmt: skip
    model, masks = pruner.compress()
    assert masks is None and pruner.result is not None
    assert [s.finetune[0]["train_kd"] is not None for s in pruner.result.steps] == [True, True]
    step, best, _, score = pruner.get_best_result()
    assert step == 2 and best is model and score == pruner.result.steps[-1].val.top1
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        AGPPruner(
            trained_net(), seed_config(0.5), total_iteration=0, finetune_spec=spec, train=train, val=val,
            dummy_input=EXAMPLE,
        )  # fmt: skip


def test_bad_budget() -> None:
    train, val = mnist_split(100)
    with pytest.raises(ConfigError, match="accuracy_budget must be a number of percentage points >= 0"):
        scheduled_prune(
            trained_net(), seed_config(0.5), steps=2, finetune_spec=FT, train=train, val=val,
            example_inputs=EXAMPLE, accuracy_budget=-1,
        )  # fmt: skip


def test_rerun_after_a_crash_resumes_from_the_checkpoints(tmp_path: Path) -> None:
    train, val = mnist_split(300)
    spec = FinetuneSpec(epochs=2, batch_size=50, lr=0.01)
    common = dict(schedule="agp", steps=2, finetune_spec=spec, train=train, val=val, example_inputs=EXAMPLE)
    full = scheduled_prune(trained_net(), seed_config(0.6), checkpoint_dir=tmp_path / "a", **common)  # type: ignore[arg-type]

    polls = 0
    steps_per_epoch = math.ceil(len(train) / 50)

    def crash_in_step_two_epoch_two() -> bool:
        nonlocal polls
        polls += 1
        # Polled once before each schedule step and before every training step.
        return polls == 1 + 2 * steps_per_epoch + 1 + steps_per_epoch + 2

    with pytest.raises(FinetuneCancelled) as info:
        scheduled_prune(
            trained_net(), seed_config(0.6), checkpoint_dir=tmp_path / "b",
            should_stop=crash_in_step_two_epoch_two, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    assert info.value.context == {"schedule_step": 2, "epoch": 2, "step": 2, "finished_epochs": 1}
    resumed = scheduled_prune(trained_net(), seed_config(0.6), checkpoint_dir=tmp_path / "b", **common)  # type: ignore[arg-type]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s.val for s in resumed.steps] == [s.val for s in full.steps]


def test_data_driven_pruner_gets_the_training_batches() -> None:
    train, val = mnist_split(300)
    result = scheduled_prune(
        trained_net(), seed_config(0.5), schedule="linear", steps=2, basic_pruner="taylorfo",
        finetune_spec=FT, train=train, val=val, example_inputs=EXAMPLE, speedup=False,
    )  # fmt: skip
    assert [round(s.sparsity, 3) for s in result.steps] == [
        round(1 - (15 + 38 + 375) / 570, 3),
        round(1 - (10 + 25 + 250) / 570, 3),
    ]


def test_an_element_wise_pruner_keeps_masks_instead_of_speedup() -> None:
    # Level's 'default' granularity is element-wise (LevelPruner.default_granularity): no channel goes.
    train, val = mnist_split(200)
    result = scheduled_prune(
        trained_net(), seed_config(0.5), schedule="linear", steps=1, basic_pruner="level",
        finetune_spec=FT, train=train, val=val, example_inputs=EXAMPLE, speedup=True,
    )  # fmt: skip
    assert result.masks is not None
    assert any("element-wise masks remove no whole channel" in note for note in result.notes)
    with pytest.raises(ConfigError, match="unknown pruner 'l1_norm'"):
        scheduled_prune(
            trained_net(), seed_config(0.5), steps=1, basic_pruner="l1_norm",
            finetune_spec=FT, train=train, val=val, example_inputs=EXAMPLE,
        )  # fmt: skip
