"""One fine-tuning run's state and its epochs: batches, distillation, progress, cancellation, checkpoints.

Batches are drawn by indexing tensors with a seeded permutation (no ``DataLoader``): it is exactly
reproducible, its state fits in a checkpoint, and it needs no worker processes, which a Celery
prefork child may not start. On CUDA the whole data set is moved to the GPU when it takes under a
quarter of the free memory, so an epoch does no host-to-device copies.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.finetune.device import autocast, fits_on_device
from nncompress.finetune.distill import distillation_loss
from nncompress.finetune.errors import FinetuneCancelled
from nncompress.finetune.evaluate import EvalResult, evaluate
from nncompress.finetune.optim import make_optimizer, make_scheduler
from nncompress.finetune.results import EpochRecord, FinetuneProgress
from nncompress.finetune.spec import FinetuneSpec

__all__ = ["Trainer"]

# Teacher outputs for the whole training set are computed once when they take at most this much;
# it halves the cost of a distillation epoch (the teacher forward is as dear as the student's).
_TEACHER_CACHE_BYTES = 256 << 20
# Progress reports per epoch (a worker writes each one to the database).
_REPORTS_PER_EPOCH = 50


class Trainer:
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
        self.optimizer = make_optimizer(params, spec)
        self.scheduler = make_scheduler(self.optimizer, spec, self.steps)
        # fp16 needs loss scaling against underflow; bf16 has fp32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
        self.records: list[EpochRecord] = []
        self.initial: EvalResult | None = None
        self.trained_samples = 0
        self.train_seconds = 0.0

    # -- one epoch --------------------------------------------------------------------------------

    def epoch(self, epoch: int) -> None:
        """Trains one epoch, evaluates, and appends its :class:`EpochRecord` to ``records``."""
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
        """Everything a resumed run needs to continue bit-identically (weights, optimizer, RNGs, records)."""
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
        """Puts back a :meth:`state` saved by an earlier run of the same fingerprint."""
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
