"""Base for deep detectors: PyTorch Lightning owns the loop; a plugin writes model, loss and score.

A deep plugin subclasses :class:`DeepDetector` and provides three things (PyOD ``base_dl`` style):

1. ``build_model(n_features) -> nn.Module``: the framework-free torch model (its ``torch_model.py``).
2. ``training_loss(model, z) -> Tensor``: the loss on a batch ``z`` of standardized rows.
3. the score, as a method of the model: ``model.score_against(z, target) -> dict`` with ``"score"`` (B),
   ``"contrib"`` (B x d) and any named components (B). ``target`` is ``z`` unless a target transform
   (mean-shift scoring) replaces it, which is why scoring is written "against" a target.

Optional hooks cover the other detectors without special cases: ``fit_after_training(model, z_fit)`` for
latent statistics or reference sets (store them as buffers so they become graph constants), and
``make_target(model, z_fit)`` for a target module whose fit-set targets may differ from the new-point path.

Why manual optimisation: on small tables a full-batch step costs well under a millisecond, while a
Lightning epoch costs several. One Lightning "epoch" therefore runs ``epochs_per_step`` optimiser epochs
inside ``training_step``; Lightning still owns device placement, seeding, callbacks, early stopping and
validation. ``aeguard bench-train`` measures what is left of the overhead against a bare torch loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from aeguard.core.base import BaseDetector, ScoreOutput

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


class Standardize(nn.Module):
    """``(x - mean) / scale`` with the fit-set statistics as graph constants (float32)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class ScoringGraph(nn.Module):
    """Raw features in, named score outputs out: what runs in process and what is exported to ONNX."""

    def __init__(self, standardize: Standardize, model: nn.Module, target: nn.Module | None,
                 output_names: list[str]) -> None:
        super().__init__()
        self.standardize = standardize
        self.model = model
        self.target = target
        self.output_names = list(output_names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.standardize(x)
        t = z if self.target is None else self.target(z)
        out = self.model.score_against(z, t)
        return tuple(out[name] for name in self.output_names)


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's banner lines and hints; aeguard shows its own progress bar instead."""
    levels = {name: logging.getLogger(name).level for name in _LIGHTNING_LOGGERS}
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|"
                                    r"LeafSpec|treespec|validation_step|val_dataloader).*")
            warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def torch_threads():
    """Run torch single-threaded unless ``AEGUARD_TORCH_THREADS`` says otherwise.

    The MLPs here are small: intra-op threads buy little, and on a shared or busy CPU their spin-waits made
    full-batch training 7-10x slower (measured on the 2-core dev machine under load).
    """
    wanted = int(os.environ.get("AEGUARD_TORCH_THREADS", "1") or 0)
    before = torch.get_num_threads()
    if wanted > 0:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    return device


class DeepDetector(BaseDetector):
    """Lightning-trained detector; subclasses add their own hyperparameters to ``__init__``.

    Common hyperparameters (each subclass lists them in its own ``__init__``): ``epochs`` (optimiser
    passes over the fit set), ``lr``, ``batch_size`` (None = full batch), ``val_fraction`` (seeded,
    label-free hold-out for early stopping / component scales), ``early_stopping`` (patience in
    Lightning steps, None = off), ``epochs_per_step``, ``device`` and ``verbose``.
    """

    exportable = True

    # --- plugin hooks ----------------------------------------------------------------------------
    def build_model(self, n_features: int) -> nn.Module:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def configure_optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """Adam with the detector's ``lr``; override for schedules (the scheduler steps once per epoch)."""
        return torch.optim.Adam(model.parameters(), lr=getattr(self, "lr", 1e-3)), None

    def fit_after_training(self, model: nn.Module, z_fit: torch.Tensor) -> None:
        """Fit statistics after training (latent covariance, reference sets); default: nothing."""

    def make_target(self, model: nn.Module, z_fit: np.ndarray) -> tuple[nn.Module | None, np.ndarray | None]:
        """Optional target transform and the fit-set targets for the threshold; default: identity."""
        return None, None

    # --- helpers for the base --------------------------------------------------------------------
    def _param(self, name: str, default: Any) -> Any:
        return getattr(self, name, default)

    def _split(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        frac = float(self._param("val_fraction", 0.0) or 0.0)
        n_val = int(round(n * frac)) if frac > 0 else 0
        if n_val == 0 or n - n_val < 2:
            return np.arange(n), np.arange(0)
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _standardize_stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = X.mean(axis=0)
        std = X.std(axis=0, ddof=1)
        return mean, std + 1e-5

    def _train(self, model: nn.Module, z_train: np.ndarray, z_val: np.ndarray | None, seed: int) -> dict[str, Any]:
        """Train ``model`` in place with Lightning; a hook so a plugin can wrap training (e.g. reuse weights)."""
        from aeguard.core.training import train_model

        return train_model(self, model, z_train, z_val, seed=seed)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        seed = self.seed_
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.device_ = resolve_device(self._param("device", "auto"))
        mean, scale = self._standardize_stats(X)
        self.standardize_ = Standardize(mean, scale)
        z_all = ((X - mean) / scale).astype(np.float32)
        train_idx, val_idx = self._split(len(z_all), rng)
        model = self.build_model(X.shape[1])
        self.history_ = self._train(model, z_all[train_idx], z_all[val_idx] if len(val_idx) else None, seed)
        model = model.to("cpu").eval()
        with torch.no_grad():
            self.fit_after_training(model, torch.from_numpy(z_all))
        target, fit_targets = self.make_target(model, z_all)
        self.model_ = model
        self.target_ = target
        self._fit_targets = fit_targets
        self._build_graph()

    def _build_graph(self) -> None:
        probe = torch.zeros(2, self.n_features_in_)
        with torch.no_grad():
            z = self.standardize_(probe)
            names = list(self.model_.score_against(z, z).keys())
        for required in ("score", "contrib"):
            if required not in names:
                raise TypeError(f"{type(self.model_).__name__}.score_against must return {required!r}")
        ordered = ["score", "contrib"] + [n for n in names if n not in ("score", "contrib")]
        self.graph_ = ScoringGraph(self.standardize_, self.model_, self.target_, ordered).eval()
        self.output_names_ = ordered
        from aeguard.core.export import bytes_per_row

        self.bytes_per_row_ = bytes_per_row(self.graph_, (self.n_features_in_,))

    def _run_graph(self, X: np.ndarray) -> dict[str, np.ndarray]:
        from aeguard.core.chunks import chunk_rows, run_chunked

        def one(xb: np.ndarray) -> dict[str, np.ndarray]:
            out = self.graph_(torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)))
            return {name: t.numpy() for name, t in zip(self.output_names_, out)}

        with torch.no_grad(), torch_threads():
            return run_chunked(one, X, chunk_rows(self.bytes_per_row_), self.output_names_)

    def _to_output(self, outs: dict[str, np.ndarray]) -> ScoreOutput:
        comps = {k: v.astype(np.float64) for k, v in outs.items() if k not in ("score", "contrib")}
        return ScoreOutput(outs["score"].astype(np.float64), outs["contrib"].astype(np.float64), comps)

    def _score(self, X: np.ndarray) -> ScoreOutput:
        return self._to_output(self._run_graph(X))

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        if self._fit_targets is None:
            return self._score(X).score
        z = self.standardize_(torch.from_numpy(X.astype(np.float32)))
        t = torch.as_tensor(self._fit_targets, dtype=torch.float32)
        with torch.no_grad():
            return self.model_.score_against(z, t)["score"].numpy().astype(np.float64)

    # --- export -----------------------------------------------------------------------------------
    def export_onnx(self, path: Any, variant: str = "fp32") -> dict[str, Any]:
        from aeguard.core.export import export_graph

        self._check_fitted()
        return export_graph(self.graph_, (self.n_features_in_,), self.output_names_, path, variant=variant)


def epochs_to_steps(epochs: int, epochs_per_step: int) -> int:
    return max(1, math.ceil(epochs / max(1, epochs_per_step)))
