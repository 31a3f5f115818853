"""The fine-tuning loop: optimizer, schedule, distillation, progress, cancellation and resume.

Batches are drawn by indexing tensors with a seeded permutation (no ``DataLoader``): it is exactly
reproducible, its state fits in a checkpoint, and it needs no worker processes, which a Celery
prefork child may not start. On CUDA the whole data set is moved to the GPU when it takes under a
quarter of the free memory, so an epoch does no host-to-device copies.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.finetune.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from nncompress.finetune.device import amp_dtype, autocast, fits_on_device, resolve_device
from nncompress.finetune.distill import distillation_loss
from nncompress.finetune.errors import FinetuneCancelled
from nncompress.finetune.evaluate import EvalResult, evaluate
from nncompress.finetune.spec import FinetuneSpec

__all__ = ["EpochRecord", "FinetuneProgress", "FinetuneResult", "finetune"]

# Teacher outputs for the whole training set are computed once when they take at most this much;
# it halves the cost of a distillation epoch (the teacher forward is as dear as the student's).
_TEACHER_CACHE_BYTES = 256 << 20
# Progress reports per epoch (a worker writes each one to the database).
_REPORTS_PER_EPOCH = 50


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean training loss (the mixed loss with distillation).
        train_ce: mean hard-label cross-entropy.
        train_kd: mean distillation term (already times ``T²``); None without distillation.
        lr: learning rate at the end of the epoch.
        val: validation accuracy and loss after the epoch.
        seconds: wall time of the epoch, evaluation included.
    """

    epoch: int
    train_loss: float
    train_ce: float
    train_kd: float | None
    lr: float
    val: EvalResult
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able form (``val_top1``, ``val_top5``, ``val_loss``)."""
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_ce": self.train_ce,
            "train_kd": self.train_kd,
            "lr": self.lr,
            "val_top1": self.val.top1,
            "val_top5": self.val.top5,
            "val_loss": self.val.loss,
            "val_samples": self.val.samples,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        """Inverse of :meth:`to_dict` (used to restore records from a checkpoint)."""
        val = EvalResult(
            top1=data["val_top1"], top5=data["val_top5"], loss=data["val_loss"], samples=data["val_samples"]
        )
        keys = ("epoch", "train_loss", "train_ce", "train_kd", "lr", "seconds")
        return cls(val=val, **{k: data[k] for k in keys})


@dataclass(frozen=True)
class FinetuneProgress:
    """What the progress callback receives, every few steps and after each epoch.

    Attributes:
        epoch: 1-based current epoch.
        epochs: total epochs.
        step: 1-based step within the epoch (``steps`` at the end of the epoch).
        steps: steps per epoch.
        loss: mean training loss of the epoch so far.
        lr: current learning rate.
        eta_seconds: estimated time to the end of the run (None until a step was timed).
        record: the finished epoch's record on the end-of-epoch report, else None.
    """

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    eta_seconds: float | None
    record: EpochRecord | None = None

    @property
    def fraction(self) -> float:
        """Share of the whole run done, in ``[0, 1]``."""
        return ((self.epoch - 1) * self.steps + self.step) / (self.epochs * self.steps)


@dataclass
class FinetuneResult:
    """The outcome of :func:`finetune`.

    Attributes:
        model: the fine-tuned model (the same object that was passed in), in eval mode.
        initial: validation result before the first epoch.
        final: validation result after the last epoch.
        epochs: one record per epoch, resumed ones included.
        resumed_from_epoch: epochs restored from a checkpoint (0 for a fresh run).
        device: where it ran.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        distillation: whether a teacher was distilled from.
        seconds: wall time of this call.
        samples_per_second: training throughput of this call (training steps only).
        notes: what was adjusted or ignored, in plain words.
    """

    model: nn.Module
    initial: EvalResult
    final: EvalResult
    epochs: list[EpochRecord]
    resumed_from_epoch: int
    device: str
    precision: str
    distillation: bool
    seconds: float
    samples_per_second: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the model itself left out)."""
        return {
            "initial": self.initial.to_dict(),
            "final": self.final.to_dict(),
            "epochs": [r.to_dict() for r in self.epochs],
            "resumed_from_epoch": self.resumed_from_epoch,
            "device": self.device,
            "precision": self.precision,
            "distillation": self.distillation,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "notes": list(self.notes),
        }


def finetune(
    model: nn.Module,
    train: LabelledDataset,
    val: LabelledDataset,
    spec: FinetuneSpec,
    *,
    teacher: nn.Module | None = None,
    progress: Callable[[FinetuneProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
) -> FinetuneResult:
    """Fine-tunes a (pruned) classifier, optionally distilling from a teacher.

    On CPU the run is deterministic for ``spec.seed``: two runs give bit-identical weights, and a run
    resumed from a checkpoint ends with the weights of an uninterrupted one.

    Args:
        model: the model to train, in place (mask parametrizations, if any, stay in force).
        train: training samples.
        val: validation samples, evaluated before the first and after every epoch.
        spec: the options.
        teacher: the model to distil from; required when ``spec.distillation`` is set.
        progress: called with a :class:`FinetuneProgress` about 50 times per epoch and after each epoch.
        should_stop: polled before every step; when it returns True, :class:`FinetuneCancelled` is raised.
        checkpoint_dir: where to save the state after every epoch (and look for one to resume).
        resume: continue from the checkpoint in ``checkpoint_dir`` when it belongs to this run.

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        FinetuneCancelled: ``should_stop()`` returned True.
        ConfigError: distillation without a teacher, CUDA asked for but absent.
    """
    if spec.distillation is not None and teacher is None:
        raise ConfigError("finetune.distillation needs the teacher model", key="finetune.distillation")
    started = time.perf_counter()
    device = resolve_device(spec.device)
    dtype = amp_dtype(device, spec.amp)
    notes: list[str] = []
    if teacher is not None and spec.distillation is None:
        notes.append("a teacher was given but finetune.distillation is not set: trained on labels only")
        teacher = None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    print_ = fingerprint(model, train, val, spec, teacher=teacher is not None) if folder is not None else ""
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    with _deterministic(device):
        run = _Run(model, train, val, spec, device, dtype, teacher, progress, should_stop)
        state = load_checkpoint(folder, print_) if folder is not None and resume else None
        if state is not None:
            run.restore(state)
        else:
            torch.manual_seed(spec.seed)  # dropout and anything else that draws from the global RNG
            run.initial = evaluate(model, val, batch_size=spec.eval_batch_size, amp=spec.amp)
        resumed = len(run.records)
        for epoch in range(resumed + 1, spec.epochs + 1):
            run.epoch(epoch)
            if folder is not None:
                save_checkpoint(folder, {"fingerprint": print_, **run.state()})
    model.eval()
    assert run.initial is not None
    return FinetuneResult(
        model=model,
        initial=run.initial,
        final=run.records[-1].val,
        epochs=list(run.records),
        resumed_from_epoch=resumed,
        device=str(device),
        precision={None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
        distillation=teacher is not None,
        seconds=time.perf_counter() - started,
        samples_per_second=run.trained_samples / run.train_seconds if run.train_seconds > 0 else 0.0,
        notes=notes,
    )


class _Run:
    """The state of one fine-tuning run: data on the device, optimizer, schedule, samplers, records."""

    def __init__(
        self,
        model: nn.Module,
        train: LabelledDataset,
        val: LabelledDataset,
        spec: FinetuneSpec,
        device: torch.device,
        dtype: torch.dtype | None,
        teacher: nn.Module | None,
        progress: Callable[[FinetuneProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.model, self.val, self.spec, self.device, self.dtype = model, val, spec, device, dtype
        self.progress, self.should_stop = progress, should_stop
        n = len(train)
        # A last batch of one sample breaks BatchNorm in training mode; drop that one (reshuffled next epoch).
        self.steps = max(
            1, n // spec.batch_size if n % spec.batch_size == 1 else math.ceil(n / spec.batch_size)
        )
        self.n = min(n, self.steps * spec.batch_size)
        on_device = fits_on_device(train.x.nbytes + train.y.nbytes, device)
        self.x = train.x.to(device) if on_device else train.x
        self.y = train.y.to(device) if on_device else train.y
        self.teacher = teacher
        self.teacher_out = self._teacher_outputs(teacher, train) if teacher is not None else None
        self.sampler = torch.Generator().manual_seed(spec.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = _optimizer(params, spec)
        self.scheduler = _scheduler(self.optimizer, spec, self.steps)
        # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
        self.records: list[EpochRecord] = []
        self.initial: EvalResult | None = None
        self.trained_samples = 0
        self.train_seconds = 0.0

    # -- one epoch --------------------------------------------------------------------------------

    def epoch(self, epoch: int) -> None:
        spec = self.spec
        start = time.perf_counter()
        order = torch.randperm(len(self.y), generator=self.sampler)[: self.n]
        self.model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, ce, kd
        every = max(1, self.steps // _REPORTS_PER_EPOCH)
        for step in range(1, self.steps + 1):
            if self.should_stop is not None and self.should_stop():
                raise FinetuneCancelled(
                    f"fine-tuning cancelled in epoch {epoch}, before step {step}",
                    epoch=epoch,
                    step=step,
                    finished_epochs=epoch - 1,
                )
            idx = order[(step - 1) * spec.batch_size : step * spec.batch_size]
            terms = self._step(idx)
            sums += terms.detach().double() * len(idx)
            if self.progress is not None and (step % every == 0 or step == self.steps):
                done = sums[0].item() / min(step * spec.batch_size, self.n)
                self._report(epoch, step, done, time.perf_counter() - start)
        train_time = time.perf_counter() - start
        self.train_seconds += train_time
        self.trained_samples += self.n
        val = evaluate(self.model, self.val, batch_size=spec.eval_batch_size, amp=spec.amp)
        means = (sums / self.n).tolist()
        record = EpochRecord(
            epoch=epoch,
            train_loss=means[0],
            train_ce=means[1],
            train_kd=means[2] if self.teacher is not None else None,
            lr=self.optimizer.param_groups[0]["lr"],
            val=val,
            seconds=time.perf_counter() - start,
        )
        self.records.append(record)
        if self.progress is not None:
            self._report(epoch, self.steps, record.train_loss, None, record)

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        dev_idx = idx.to(self.x.device)
        x = self.x[dev_idx].to(self.device, non_blocking=True)
        y = self.y[dev_idx].to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype is not None):
            out = self.model(x)
            if self.teacher is not None:
                t_out = self._teacher_batch(x, idx)
        if self.teacher is not None:
            d = self.spec.distillation
            assert d is not None
            loss, ce, kd = distillation_loss(out, t_out, y, weight=d.weight, temperature=d.temperature)
        else:
            loss = ce = F.cross_entropy(out.float(), y)
            kd = torch.zeros((), device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return torch.stack([loss.detach(), ce.detach(), kd.detach()])

    def _teacher_outputs(self, teacher: nn.Module, train: LabelledDataset) -> torch.Tensor | None:
        with torch.no_grad():
            probe = teacher(train.x[:1].to(self.device))
        if len(train) * probe[0].numel() * 4 > _TEACHER_CACHE_BYTES:
            return None
        outs = []
        bs = self.spec.eval_batch_size
        with torch.no_grad():
            for s in range(0, len(train), bs):
                with autocast(self.device, self.dtype is not None):
                    outs.append(teacher(self.x[s : s + bs].to(self.device)).float())
        return torch.cat(outs).to(self.x.device)

    def _teacher_batch(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.teacher_out is not None:
            return self.teacher_out[idx.to(self.teacher_out.device)].to(self.device)
        assert self.teacher is not None
        with torch.no_grad():
            return self.teacher(x)

    def _report(
        self, epoch: int, step: int, loss: float, elapsed: float | None, record: EpochRecord | None = None
    ) -> None:
        assert self.progress is not None
        eta = None
        if elapsed is not None and step > 0:
            per_step = elapsed / step
            # Earlier epochs of this call (evaluation included) give a better per-epoch estimate.
            remaining = (self.steps - step) + (self.spec.epochs - epoch) * self.steps
            eta = per_step * remaining
        elif record is not None:
            eta = record.seconds * (self.spec.epochs - epoch)
        self.progress(
            FinetuneProgress(
                epoch=epoch,
                epochs=self.spec.epochs,
                step=step,
                steps=self.steps,
                loss=loss,
                lr=self.optimizer.param_groups[0]["lr"],
                eta_seconds=eta,
                record=record,
            )
        )

    # -- checkpoint state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        assert self.initial is not None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "sampler": self.sampler.get_state(),
            "initial": self.initial.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs on this worker
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.sampler.set_state(state["sampler"])
        self.initial = EvalResult(**state["initial"])
        self.records = [EpochRecord.from_dict(r) for r in state["records"]]


def _optimizer(params: list[torch.nn.Parameter], spec: FinetuneSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _scheduler(
    optimizer: torch.optim.Optimizer, spec: FinetuneSpec, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    # Stepped per batch: a one-epoch fine-tune still sees its schedule.
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs * steps)
    if spec.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_size * steps, gamma=spec.gamma)
    return None


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CPU and a private RNG for the run; the caller's settings are restored.

    On CUDA, determinism would need ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts and slower
    kernels; GPU runs are reproducible only up to float rounding, as documented.
    """
    # fork_rng: seeding for the run must not change the caller's global RNG stream.
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if device.type != "cpu":
            yield
            return
        with _deterministic_cpu():
            yield


@contextlib.contextmanager
def _deterministic_cpu() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
