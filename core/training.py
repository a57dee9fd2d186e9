"""The Lightning glue behind :class:`aeguard.core.deep.DeepDetector`.

Data live in memory as one tensor; each Lightning step runs ``epochs_per_step`` optimiser epochs (full
batch, or seeded mini-batches when ``batch_size`` is set), so the framework's per-step cost is paid once
per chunk rather than once per epoch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping
from torch import nn

from aeguard.core.deep import quiet_lightning, torch_threads


class _TrainingModule(pl.LightningModule):
    def __init__(self, detector: Any, model: nn.Module, epochs: int, epochs_per_step: int,
                 batch_size: int | None, seed: int) -> None:
        super().__init__()
        self.detector = detector
        self.model = model
        self.epochs = epochs
        self.epochs_per_step = epochs_per_step
        self.batch_size = batch_size
        self.epochs_done = 0
        self.steps_done = 0
        self.automatic_optimization = False
        self._generator = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []

    def configure_optimizers(self) -> Any:
        optimizer, scheduler = self.detector.configure_optimizer(self.model)
        self._scheduler = scheduler
        return optimizer

    def _batches(self, z: torch.Tensor):
        n = z.shape[0]
        if not self.batch_size or self.batch_size >= n:
            yield z
            return
        perm = torch.randperm(n, generator=self._generator).to(z.device)
        for start in range(0, n, self.batch_size):
            yield z[perm[start:start + self.batch_size]]

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # The raw optimizer and plain backward: the run is fp32 on one device, so Lightning's precision and
        # strategy wrappers would only add per-epoch cost (measured by `aeguard bench-train`).
        optimizer = self.optimizers().optimizer
        loss = None
        n_epochs = min(self.epochs_per_step, self.epochs - self.epochs_done)
        for _ in range(n_epochs):
            for zb in self._batches(batch):
                loss = self.detector.training_loss(self.model, zb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if self._scheduler is not None:
                self._scheduler.step()
        self.epochs_done += n_epochs
        self.steps_done += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"training loss became {value} after {self.epochs_done} epochs; "
                               "lower lr or check the input scale")
        self.losses.append(value)
        self.log("train_loss", value, prog_bar=False, logger=False)
        if self.epochs_done >= self.epochs:
            self.trainer.should_stop = True

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        with torch.no_grad():
            loss = self.detector.training_loss(self.model, batch)
        self.log("val_loss", float(loss), prog_bar=False, logger=False)


class _OneBatch:
    """An iterable yielding the whole in-memory tensor once: one Lightning step per Lightning epoch."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __iter__(self):
        yield self.tensor

    def __len__(self) -> int:
        return 1


class RichEpochBar(Callback):
    """A rich progress bar over optimiser epochs (Lightning's own bar counts Lightning steps)."""

    def __init__(self, total_epochs: int, description: str) -> None:
        self.total_epochs = total_epochs
        self.description = description
        self._progress = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: _TrainingModule) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total} epochs"),
                                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
                                  TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total_epochs, loss="-")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: _TrainingModule, *args: Any) -> None:
        self._progress.update(self._task, completed=pl_module.epochs_done, loss=f"{pl_module.losses[-1]:.4g}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: _TrainingModule) -> None:
        if self._progress is not None:
            self._progress.stop()


class _BestWeights(Callback):
    """Keeps the weights of the lowest validation loss and puts them back when training ends."""

    def __init__(self) -> None:
        self.best = math.inf
        self.epoch = 0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: _TrainingModule) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if value is not None and float(value) < self.best:
            self.best, self.epoch = float(value), pl_module.epochs_done
            self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_end(self, trainer: pl.Trainer, pl_module: _TrainingModule) -> None:
        if self.state is not None:
            pl_module.model.load_state_dict(self.state)


def train_model(detector: Any, model: nn.Module, z_train: np.ndarray, z_val: np.ndarray | None,
                seed: int) -> dict[str, Any]:
    """Train ``model`` in place with Lightning; returns a small history for the manifest."""
    epochs = int(detector._param("epochs", 100))
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    epochs_per_step = int(detector._param("epochs_per_step", 50))
    batch_size = detector._param("batch_size", None)
    verbose = bool(detector._param("verbose", False))
    patience = detector._param("early_stopping", None)
    module = _TrainingModule(detector, model, epochs, epochs_per_step, batch_size, seed)
    n_steps = math.ceil(epochs / epochs_per_step)
    callbacks: list[Callback] = []
    if verbose:
        callbacks.append(RichEpochBar(epochs, f"training {type(detector).__name__}"))
    has_val = z_val is not None and len(z_val) > 0
    if patience is not None and has_val:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=int(patience), mode="min"))
    best = _BestWeights() if has_val and detector._param("restore_best", False) else None
    if best is not None:
        callbacks.append(best)
    train_tensor = torch.from_numpy(np.ascontiguousarray(z_train))
    loaders: dict[str, Any] = {"train_dataloaders": _OneBatch(train_tensor)}
    if has_val:
        loaders["val_dataloaders"] = _OneBatch(torch.from_numpy(np.ascontiguousarray(z_val)))
    started = time.perf_counter()
    with quiet_lightning(), torch_threads():
        trainer = pl.Trainer(
            accelerator="gpu" if detector.device_ == "cuda" else "cpu", devices=1, max_epochs=n_steps,
            logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
            num_sanity_val_steps=0, callbacks=callbacks, deterministic=False,
            limit_val_batches=1.0 if has_val else 0,
        )
        trainer.fit(module, **loaders)
    return {"epochs_run": module.epochs_done, "stopped_early": module.epochs_done < epochs,
            "lightning_steps": module.steps_done,
            "final_loss": module.losses[-1] if module.losses else None,
            "train_seconds": round(time.perf_counter() - started, 4),
            "n_train": int(len(z_train)), "n_val": int(len(z_val)) if has_val else 0,
            **({"best_epoch": best.epoch, "best_val_loss": best.best} if best is not None else {})}
