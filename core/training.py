"""The Lightning glue behind :class:`aeguard.core.deep.DeepDetector`: it runs a plugin's training stages.

A :class:`~aeguard.core.deep.Stage` names a loss, the parameters it trains (the rest are frozen for the stage),
its tensors (inputs and any per-row targets), epochs, batch size, learning rate and an optional validation
loss with patience in epochs. Each stage is one ``Trainer.fit``. Data live in memory; each Lightning step runs
``epochs_per_step`` optimiser epochs (full batch, or seeded mini-batches), so the framework's per-step cost is
paid once per chunk rather than once per epoch (``aeguard bench-train`` measures what is left). Validation and
early stopping run inside the chunk, every ``val_every`` epochs, so patience is counted in epochs whatever the
chunk size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from aeguard.core.deep import FitData, Stage, quiet_lightning, torch_threads


class _EarlyStop:
    """Best validation loss so far, its epoch and weights; says when ``patience`` epochs passed without a gain."""

    def __init__(self, patience: int | None, keep_best: bool) -> None:
        self.patience = patience
        self.keep_best = keep_best
        self.best = math.inf
        self.epoch = 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Record one validation loss; True when training should stop."""
        if value < self.best:
            self.best, self.epoch = value, epoch
            if self.keep_best:
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.patience is not None and epoch - self.epoch >= self.patience


class _MemberEarlyStop:
    """Early stopping of stacked members (``aeguard.core.ensemble``): the stage stops when the **mean** of the
    member validation losses has not improved for ``patience`` epochs, and each member keeps its **own** best
    weights (the rows of the stacked parameters at its own lowest validation loss).

    Why the mean decides when to stop: the members run as one batched model, so a member that stopped alone
    would still be computed; waiting for the slowest member (per-member stopping) made 5 members of ``apre``
    cost 6.5x one on mammography, since the slowest of five runs far longer than a typical one.
    """

    def __init__(self, patience: int | None, keep_best: bool, n_members: int) -> None:
        self.patience = patience
        self.keep_best = keep_best
        self.n_members = n_members
        self.bests = torch.full((n_members,), math.inf, dtype=torch.float64)
        self.epochs = torch.zeros(n_members, dtype=torch.long)
        self.best_mean = math.inf
        self.mean_epoch = 0
        self.state: dict[str, torch.Tensor] | None = None

    @property
    def best(self) -> float:
        return self.best_mean

    @property
    def epoch(self) -> list[int]:
        """Each member's best epoch (the weights it keeps with ``restore_best``)."""
        return [int(e) for e in self.epochs]

    def update(self, values: torch.Tensor, epoch: int, model: nn.Module) -> bool:
        values = values.detach().double().cpu().reshape(self.n_members)
        mean = float(values.mean())
        if mean < self.best_mean:
            self.best_mean, self.mean_epoch = mean, epoch
        better = values < self.bests
        if bool(better.any()):
            self.bests = torch.where(better, values, self.bests)
            self.epochs = torch.where(better, torch.full_like(self.epochs, epoch), self.epochs)
            if self.keep_best:
                stacked = {n for n, p in model.named_parameters() if p.dim() and p.shape[0] == self.n_members}
                current = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if self.state is None:
                    self.state = current
                else:
                    for k, v in current.items():
                        if k in stacked:
                            rows = better.to(v.device)
                            self.state[k][rows] = v[rows]
        return self.patience is not None and epoch - self.mean_epoch >= self.patience


class _StageModule(pl.LightningModule):
    def __init__(self, stage: Stage, model: nn.Module, val: tuple[torch.Tensor, ...] | None, seed: int,
                 stop: _EarlyStop | _MemberEarlyStop) -> None:
        super().__init__()
        self.stage = stage
        self.model = model
        self.val = val
        self.stop = stop
        self.epochs_done = 0
        self.steps_done = 0
        self.stopped_early = False
        self.automatic_optimization = False
        self._generator = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []
        self.val_losses: list[tuple[int, float]] = []

    def configure_optimizers(self) -> Any:
        optimizer, scheduler = self.stage.optimizer(self.stage.trainable(self.model), self.stage)
        self._scheduler = scheduler
        return optimizer

    def _batches(self, tensors: Sequence[torch.Tensor]):
        n = tensors[0].shape[0]
        size = self.stage.batch_size
        if not size or size >= n:
            yield tuple(tensors)
            return
        perm = torch.randperm(n, generator=self._generator).to(tensors[0].device)
        for start in range(0, n, size):
            idx = perm[start:start + size]
            yield tuple(t[idx] for t in tensors)

    def _validate(self) -> bool:
        with torch.no_grad():
            value = self.stage.validation_loss(self.model, *self.val)
        if not self.stage.members:
            value = float(value)
        self.val_losses.append((self.epochs_done, float(value.mean()) if self.stage.members else value))
        return self.stop.update(value, self.epochs_done, self.model)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        # The raw optimizer and plain backward: the run is fp32 on one device, so Lightning's precision and
        # strategy wrappers would only add per-epoch cost (measured by `aeguard bench-train`).
        optimizer = self.optimizers().optimizer
        stage = self.stage
        loss = None
        n_epochs = min(stage.epochs_per_step, stage.epochs - self.epochs_done)
        for _ in range(n_epochs):
            for tensors in self._batches(batch):
                loss = stage.loss(self.model, *tensors)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stage.after_backward is not None:
                    stage.after_backward(self.model)
                optimizer.step()
                if stage.after_step is not None:
                    with torch.no_grad():
                        stage.after_step(self.model)
            if self._scheduler is not None:
                self._scheduler.step()
            self.epochs_done += 1
            if self.val is not None and (self.epochs_done % stage.val_every == 0 or self.epochs_done == stage.epochs):
                if self._validate():
                    self.stopped_early = self.epochs_done < stage.epochs
                    break
        self.steps_done += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"training loss became {value} after {self.epochs_done} epochs of stage "
                               f"{stage.name!r}; lower lr or check the input scale")
        self.losses.append(value)
        if self.stopped_early or self.epochs_done >= stage.epochs:
            self.trainer.should_stop = True


class _OneBatch:
    """An iterable yielding the whole in-memory tensors once: one Lightning step per Lightning epoch."""

    def __init__(self, tensors: tuple[torch.Tensor, ...]) -> None:
        self.tensors = tensors

    def __iter__(self):
        yield self.tensors

    def __len__(self) -> int:
        return 1


class RichEpochBar(Callback):
    """One rich progress bar over the optimiser epochs of every stage (Lightning's own counts steps)."""

    def __init__(self, total_epochs: int, description: str) -> None:
        self.total_epochs = total_epochs
        self.description = description
        self.offset = 0
        self._progress = None
        self._task = None

    def start(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total} epochs"),
                                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                  TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total_epochs, loss="-")

    def on_train_start(self, trainer: pl.Trainer, pl_module: _StageModule) -> None:
        self._progress.update(self._task, description=f"{self.description} [{pl_module.stage.name}]")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: _StageModule, *args: Any) -> None:
        self._progress.update(self._task, completed=self.offset + pl_module.epochs_done,
                              loss=f"{pl_module.losses[-1]:.4g}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: _StageModule) -> None:
        self.offset += pl_module.stage.epochs  # an early stop skips the rest of this stage's epochs

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.total_epochs)
            self._progress.stop()


def _as_tensors(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, ...]:
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    n = {t.shape[0] for t in tensors}
    if len(n) != 1:
        raise ValueError(f"a stage's tensors must have the same number of rows, got {sorted(n)}")
    return tensors


def _run_stage(stage: Stage, model: nn.Module, data: FitData, seed: int, accelerator: str,
               bar: RichEpochBar | None) -> dict[str, Any]:
    train = _as_tensors(stage.train_arrays(data))
    val_arrays = stage.val_arrays(data)
    val = _as_tensors(val_arrays) if val_arrays is not None and len(val_arrays[0]) else None
    patience, keep_best = stage.patience if val is not None else None, val is not None and stage.restore_best
    stop = (_MemberEarlyStop(patience, keep_best, stage.members) if stage.members
            else _EarlyStop(patience, keep_best))
    trainable = {id(p) for p in stage.trainable(model)}
    frozen = [p for p in model.parameters() if id(p) not in trainable and p.requires_grad]
    module = _StageModule(stage, model, val, seed, stop)
    started = time.perf_counter()
    for p in frozen:
        p.requires_grad_(False)
    try:
        trainer = pl.Trainer(
            accelerator=accelerator, devices=1, max_epochs=math.ceil(stage.epochs / stage.epochs_per_step),
            logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
            num_sanity_val_steps=0, callbacks=[bar] if bar is not None else [], deterministic=False,
            limit_val_batches=0,
        )
        trainer.fit(module, train_dataloaders=_OneBatch(train))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    if stop.state is not None:
        model.load_state_dict(stop.state)
    history: dict[str, Any] = {
        "stage": stage.name, "epochs_run": module.epochs_done, "stopped_early": module.stopped_early,
        "lightning_steps": module.steps_done, "final_loss": module.losses[-1] if module.losses else None,
        "train_seconds": round(time.perf_counter() - started, 4), "n_train": int(len(train[0])),
        "n_val": int(len(val[0])) if val is not None else 0, "frozen_parameters": int(sum(p.numel() for p in frozen)),
    }
    if val is not None:
        history.update(best_epoch=stop.epoch, best_val_loss=stop.best)
    return history


def train_stages(detector: Any, model: nn.Module, stages: Sequence[Stage], data: FitData) -> dict[str, Any]:
    """Train ``model`` in place, one Lightning run per stage; returns the history for the manifest.

    Stage ``i`` draws its mini-batches from ``seed + i`` (stage 0 from the fit seed itself). The top-level keys
    sum or combine the stages (``epochs_run``, ``train_seconds``; the last stage's loss), ``stages`` has each.
    """
    if not stages:
        raise ValueError(f"{type(detector).__name__}.stages() returned no training stage")
    for stage in stages:
        stage.check()
    accelerator = "gpu" if getattr(detector, "device_", "cpu") == "cuda" else "cpu"
    bar = None
    if bool(detector._param("verbose", False)):
        bar = RichEpochBar(sum(s.epochs for s in stages), f"training {type(detector).__name__}")
        bar.start()
    per_stage = []
    try:
        with quiet_lightning(), torch_threads():
            for i, stage in enumerate(stages):
                per_stage.append(_run_stage(stage, model, data, data.seed + i, accelerator, bar))
    finally:
        if bar is not None:
            bar.stop()
    last = per_stage[-1]
    history = {key: value for key, value in last.items() if key not in ("stage", "frozen_parameters")}
    history.update(epochs_run=sum(h["epochs_run"] for h in per_stage),
                   stopped_early=any(h["stopped_early"] for h in per_stage),
                   lightning_steps=sum(h["lightning_steps"] for h in per_stage),
                   train_seconds=round(sum(h["train_seconds"] for h in per_stage), 4),
                   n_train=len(data.train_idx), n_val=len(data.val_idx), stages=per_stage)
    return history


def train_model(detector: Any, model: nn.Module, z_train: np.ndarray, z_val: np.ndarray | None,
                seed: int) -> dict[str, Any]:
    """Train ``model`` with the detector's default stage on these rows (``aeguard bench-train`` uses this)."""
    z_val = z_val if z_val is not None else np.zeros((0,) + z_train.shape[1:], dtype=np.float32)
    z = np.concatenate([z_train, z_val]).astype(np.float32)
    data = FitData(z=z, train_idx=np.arange(len(z_train)), val_idx=np.arange(len(z_train), len(z)), seed=seed)
    return train_stages(detector, model, detector.stages(model, data), data)
