"""Base for deep detectors: PyTorch Lightning owns the loop; a plugin writes model, loss and score.

A deep plugin subclasses :class:`DeepDetector` and provides three things (PyOD ``base_dl`` style):

1. ``build_model(data) -> nn.Module``: the framework-free torch model (its ``torch_model.py``); ``data`` is the
   :class:`FitData` (standardized rows, split apart, optional classes), so constants measured on the data
   (medians, bias vectors, cluster centres) can be built into the model as buffers and become graph constants.
2. ``training_loss(model, z) -> Tensor``: the loss on a batch ``z`` of standardized rows (the default stage).
3. the score, as a method of the model: ``model.score_against(z, target) -> dict`` with ``"score"`` (B),
   ``"contrib"`` (B x d) and any named components (B; float or integer such as a predicted class). ``target`` is
   ``z`` unless a target transform (mean-shift scoring) replaces it, which is why scoring is written "against".

Optional hooks cover the other detectors without special cases, in the order they run:

- ``prepare(data)``: statistics needed before the model exists (store them as ``*_`` attributes);
- ``stages(model, data) -> list[Stage]``: several training stages, each with its loss, trained parameters (the
  rest frozen), tensors (inputs and per-row targets), epochs, batch size, lr, validation loss with patience in
  epochs, and after-step hooks (renormalisation, projections, counters); default: one stage of
  ``training_loss`` over all parameters with the detector's ``epochs``, ``lr``, ``batch_size``,
  ``early_stopping`` (epochs), ``restore_best`` and ``configure_optimizer``;
- ``fit_after_training(model, data)``: latent statistics or reference sets, with training and validation rows
  apart (``data.z_train`` / ``data.z_val``); store them as buffers so they become graph constants;
- ``make_target(model, data)``: a target module whose fit-set targets may differ from the new-point path;
- ``manifest_extra()``: a JSON block for the artifact manifest.

Modules whose class sets ``keep_fp32 = True`` are declared FP32: the INT8 edge variant keeps every node
exported from them in float (distances, whitening, anything feeding TopK/ArgMin).

Why manual optimisation: on small tables a full-batch step costs well under a millisecond, while a
Lightning epoch costs several. One Lightning "epoch" therefore runs ``epochs_per_step`` optimiser epochs
inside ``training_step``; Lightning still owns device placement, seeding and the loop.
``aeguard bench-train`` measures what is left of the overhead against a bare torch loop.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.core.params import Float, Grid, Int, Spec

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


@dataclass(frozen=True)
class FitData:
    """What a deep plugin sees while fitting: the standardized fit rows with the split and optional classes.

    ``z`` holds every fit row (float32, in fit order); ``train_idx`` / ``val_idx`` index the seeded, label-free
    split (``val_idx`` is empty without ``val_fraction``). ``classes`` are integer codes ``0..n_classes-1`` of the
    class labels given to ``fit(X, classes=...)`` (never the outlier labels ``y``), or None.
    """

    z: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    seed: int
    classes: np.ndarray | None = None
    n_classes: int = 0

    @property
    def z_train(self) -> np.ndarray:
        return self.z[self.train_idx]

    @property
    def z_val(self) -> np.ndarray | None:
        return self.z[self.val_idx] if len(self.val_idx) else None

    @property
    def classes_train(self) -> np.ndarray | None:
        return None if self.classes is None else self.classes[self.train_idx]

    @property
    def classes_val(self) -> np.ndarray | None:
        return None if self.classes is None or not len(self.val_idx) else self.classes[self.val_idx]

    @property
    def n_features(self) -> int:
        return int(np.prod(self.z.shape[1:]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.z.shape[1:])


#: False falls back to the for-loop kernel everywhere (for side-by-side measurements, ``scripts/fused_adam.py``)
FUSED_ADAM = True


def adam(parameters: Any, lr: float, **options: Any) -> torch.optim.Adam:
    """Adam on torch's fused kernel where it has one, the default for-loop kernel otherwise.

    Why: the same update rule at less cost per step on this project's small networks, where the optimiser's
    per-parameter loop, not the arithmetic, is much of a training step: `mahalanobis` trains 1.5x faster at
    equal epochs (satellite, cardio), `ae` up to 1.5x, `sae_ood` (larger matrices) 1.03-1.18x, test ROC-AUC
    within 0.007 (``scripts/fused_adam.py``, ``docs/benchmarks/fused_adam.json``). Rounding differs from the
    for-loop kernel, so early stopping may pick another epoch. Every deep optimiser that is Adam comes from here.
    """
    parameters = list(parameters)
    if not FUSED_ADAM:
        return torch.optim.Adam(parameters, lr=lr, **options)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True, **options)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, **options)


def _adam(parameters: list[nn.Parameter], stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
    return adam(parameters, lr=stage.lr), None


@dataclass
class Stage:
    """One training stage; the base runs a plugin's stages in order, each as one Lightning fit.

    - ``loss(model, *tensors) -> Tensor`` on a batch of the stage's tensors;
    - ``tensors(data)``: the arrays batched together (same rows; inputs and per-row targets), default
      ``(data.z_train,)``; ``val_tensors(data)``: the validation arrays, default ``(data.z_val,)`` when ``tensors``
      is the default, else none (no validation unless given);
    - ``parameters(model)``: what the stage trains; every other parameter is frozen for the stage;
    - ``val_loss``: the validation loss (default ``loss``), checked every ``val_every`` epochs (default
      ``epochs_per_step``); ``patience`` in epochs (None: no early stopping); ``restore_best`` puts back the
      weights of the best validation loss;
    - ``optimizer(parameters, stage) -> (optimizer, scheduler or None)``; default Adam with ``lr``; the scheduler
      steps once per epoch;
    - ``after_backward(model)`` (gradient projections) and ``after_step(model)`` (renormalisation, counters; run
      under ``no_grad``) run around every optimiser step.
    """

    loss: Callable[..., torch.Tensor]
    name: str = "fit"
    tensors: Callable[[FitData], tuple[np.ndarray, ...]] | None = None
    val_tensors: Callable[[FitData], tuple[np.ndarray, ...] | None] | None = None
    parameters: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None
    epochs: int = 100
    batch_size: int | None = None
    lr: float = 1e-3
    optimizer: Callable[[list[nn.Parameter], Stage], tuple[torch.optim.Optimizer, Any]] = field(default=_adam)
    val_loss: Callable[..., torch.Tensor] | None = None
    patience: int | None = None
    val_every: int | None = None
    restore_best: bool = False
    after_backward: Callable[[nn.Module], None] | None = None
    after_step: Callable[[nn.Module], None] | None = None
    epochs_per_step: int = 50
    #: set by the base's ensemble trainer (``aeguard.core.ensemble``), never by a plugin: the number of stacked
    #: members; ``val_loss`` then returns one loss per member and early stopping runs per member
    members: int = 0

    def check(self) -> None:
        """Refuse settings the loop cannot run, naming the stage and the setting."""
        for name, low in (("epochs", 1), ("epochs_per_step", 1), ("val_every", 1), ("batch_size", 1),
                          ("patience", 0)):
            value = getattr(self, name)
            if value is None and name in ("val_every", "batch_size", "patience"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"stage {self.name!r}: {name} must be an int >= {low}, got {value!r}")
        if self.val_every is None:
            self.val_every = self.epochs_per_step
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"stage {self.name!r}: lr must be a number >= 0, got {self.lr!r}")

    def train_arrays(self, data: FitData) -> tuple[np.ndarray, ...]:
        return (data.z_train,) if self.tensors is None else tuple(self.tensors(data))

    def val_arrays(self, data: FitData) -> tuple[np.ndarray, ...] | None:
        if self.val_tensors is not None:
            found = self.val_tensors(data)
            return None if found is None else tuple(found)
        if self.tensors is None and data.z_val is not None:
            return (data.z_val,)
        return None

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters() if self.parameters is None else self.parameters(model))

    def validation_loss(self, model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        return (self.val_loss or self.loss)(model, *tensors)


class Standardize(nn.Module):
    """``(x - mean) / scale`` with the fit-set statistics as graph constants (float32)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class ImageStandardize(nn.Module):
    """Raw pixels to standardized inputs: ``((x - low) / (high - low) - mean[c]) / scale[c]``, graph constants.

    Pixels are first scaled to [0, 1] by the fit's pixel range (uint8: 0-255), then standardized per channel,
    never per pixel: a pixel that is constant over the fit set (a border, a mask) keeps the channel's scale
    instead of a near-zero one that would let its smallest change dominate every score (``apre.md`` section 7).
    ``layout`` is what the model takes: ``"flat"`` rows (B, C*H*W) in C-order, or ``"chw"`` (B, C, H, W).
    """

    def __init__(self, pixel_range: tuple[float, float], mean: np.ndarray, scale: np.ndarray,
                 layout: str = "flat") -> None:
        super().__init__()
        if layout not in ("flat", "chw"):
            raise ValueError(f"image layout must be 'flat' or 'chw', got {layout!r}")
        self.pixel_range = (float(pixel_range[0]), float(pixel_range[1]))
        self.layout = layout
        channels = len(mean)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(channels, 1, 1))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(channels, 1, 1))

    @staticmethod
    def statistics(X: np.ndarray, pixel_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and scale of [0, 1]-scaled pixels: ddof=1 std + 1e-5; a channel that is constant over
        the whole fit set gets scale ``max(|mean|, 1)`` (as tables' constant columns do, see
        :func:`aeguard.core.validation.standard_scale`)."""
        lo, hi = pixel_range
        x01 = (X - lo) / (hi - lo)
        mean, std = x01.mean(axis=(0, 2, 3)), x01.std(axis=(0, 2, 3), ddof=1)
        return mean, np.where(std == 0, np.maximum(np.abs(mean), 1.0), std + 1e-5)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The same map in numpy float64 (the fit rows the plugin trains on), then float32."""
        lo, hi = self.pixel_range
        mean, scale = self.mean.numpy().astype(np.float64), self.scale.numpy().astype(np.float64)
        z = (((X - lo) / (hi - lo)) - mean) / scale
        return (z.reshape(len(z), -1) if self.layout == "flat" else z).astype(np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.pixel_range
        z = ((x - lo) / (hi - lo) - self.mean) / self.scale
        return z.flatten(1) if self.layout == "flat" else z

    def manifest(self) -> dict[str, Any]:
        return {"type": "image_standardize", "in_graph": True, "per": "channel", "layout": self.layout,
                "formula": "((x - low) / (high - low) - mean[c]) / scale[c]",
                "pixel_range": list(self.pixel_range), "mean": self.mean.flatten().tolist(),
                "scale": self.scale.flatten().tolist()}


class ScoringGraph(nn.Module):
    """Raw features in, named score outputs out: what runs in process and what is exported to ONNX."""

    def __init__(self, standardize: Standardize | ImageStandardize, model: nn.Module, target: nn.Module | None,
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


def _check_member_grid(detector: Any, entries: dict[str, list[Any]]) -> None:
    from aeguard.core.ensemble import member_overrides

    member_overrides(detector, entries)


class DeepDetector(BaseDetector):
    """Lightning-trained detector; subclasses add their own hyperparameters to ``__init__``.

    Common hyperparameters (each subclass lists them in its own ``__init__``): ``epochs`` (optimiser
    passes over the fit set), ``lr``, ``batch_size`` (None = full batch), ``val_fraction`` (seeded,
    label-free hold-out for early stopping / component scales), ``early_stopping`` (patience in epochs on the
    hold-out loss, None = off), ``restore_best``, ``epochs_per_step``, ``device`` and ``verbose``.
    """

    exportable = True
    #: hyperparameters the base adds to every subclass's signature (keyword-only, after the class's own), so
    #: ``get_params``/``clone``/``--param`` see them without any plugin declaring them: ``n_members`` networks
    #: trained together and combined in one graph (``aeguard.core.ensemble``); 1 is the single model, unchanged;
    #: ``member_grid``: per-member values of the class's own parameters ("none": members differ in their seeds only)
    #: ``member_subsample``: the fraction of the training rows each member trains on, drawn per member (1.0: all)
    ensemble_params: ClassVar[dict[str, Any]] = {"n_members": 1, "member_grid": "none", "member_subsample": 1.0}
    param_spec: ClassVar[dict[str, Spec]] = {"n_members": Int(low=1), "member_grid": Grid(validate=_check_member_grid),
                                             "member_subsample": Float(low=0.0, high=1.0, low_open=True)}
    n_members: int = 1
    member_grid: Any = "none"
    member_subsample: float = 1.0
    #: parameters the members of an ensemble share, so ``member_grid`` refuses them (with the reason shown): the
    #: base reads them once, before the members exist, or they act on the combined score
    member_shared_params: ClassVar[dict[str, str]] = {
        "n_members": "is the ensemble's own size", "member_grid": "is the grid itself",
        "member_subsample": "is the size of every member's row sample",
        "contamination": "sets the threshold of the combined score, not a member's",
        "random_state": "seeds the split the members share (each member already has its own seed, member_seed)",
        "val_fraction": "sets the training/hold-out split, which the members share",
        "device": "is one device for the whole ensemble", "verbose": "is a display setting",
        "faithful": "imposes several settings at once, among them the split the members share",
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        missing = {n: v for n, v in DeepDetector.ensemble_params.items() if n not in sig.parameters}
        if not missing:  # declared by the class itself, or a wrapper (with_mss) that copied a wrapped signature
            return

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **params: Any) -> None:
            values = {n: params.pop(n, default) for n, default in missing.items()}
            init(self, *args, **params)
            for n, value in values.items():
                setattr(self, n, value)

        own = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=v) for n, v in missing.items()]
        __init__.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    #: what the model takes from image inputs: "flat" rows (B, C*H*W) or "chw" tensors (B, C, H, W); the base
    #: standardizes per channel either way (:class:`ImageStandardize`). Images reach a plugin only when its class
    #: lists "image" in ``modalities``.
    image_layout: ClassVar[str] = "flat"

    # --- plugin hooks ----------------------------------------------------------------------------
    def prepare(self, data: FitData) -> None:
        """Statistics the model needs before it exists (store them as ``*_`` attributes); default: nothing."""

    def build_model(self, data: FitData) -> nn.Module:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def configure_optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """Adam with the detector's ``lr`` for the default stage; override for schedules (stepped per epoch)."""
        return adam(model.parameters(), lr=self._param("lr", 1e-3)), None

    def default_stage(self, model: nn.Module) -> Stage:
        """The one stage of a plugin that writes only ``training_loss``: every parameter, the detector's settings."""
        return Stage(
            name="fit", loss=self.training_loss, epochs=int(self._param("epochs", 100)),
            batch_size=self._param("batch_size", None), lr=float(self._param("lr", 1e-3)),
            optimizer=lambda parameters, stage: self.configure_optimizer(model),
            patience=self._param("early_stopping", None), restore_best=bool(self._param("restore_best", False)),
            epochs_per_step=int(self._param("epochs_per_step", 50)),
        )

    def stages(self, model: nn.Module, data: FitData) -> list[Stage]:
        """The training stages, run in order; default: :meth:`default_stage`."""
        return [self.default_stage(model)]

    def fit_after_training(self, model: nn.Module, data: FitData) -> None:
        """Fit statistics after training (latent covariance, reference sets); default: nothing."""

    def make_target(self, model: nn.Module, data: FitData) -> tuple[nn.Module | None, np.ndarray | None]:
        """Optional target transform and the fit-set targets (all of ``data.z``) for the threshold."""
        return None, None

    def manifest_extra(self) -> dict[str, Any]:
        """Manifest block of the fit: the split (and each plugin adds its own by extending this)."""
        extra: dict[str, Any] = {"split": dict(self.split_)} if hasattr(self, "split_") else {}
        if getattr(self, "ensemble_", None):
            extra["ensemble"] = dict(self.ensemble_)
        return extra

    # --- helpers for the base --------------------------------------------------------------------
    #: settings that ``faithful=True`` imposes (a paper's own), read through :meth:`_param`
    faithful_settings: ClassVar[dict[str, Any]] = {}

    def _param(self, name: str, default: Any) -> Any:
        """A training setting: the faithful value when ``faithful`` is on and declares it, else the parameter."""
        if getattr(self, "faithful", False) and name in self.faithful_settings:
            return self.faithful_settings[name]
        return getattr(self, name, default)

    def _split(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        frac = float(self._param("val_fraction", 0.0) or 0.0)
        n_val = int(round(n * frac)) if frac > 0 else 0
        if n_val == 0 or n - n_val < 2:
            return np.arange(n), np.arange(0)
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _standardize_stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit-set mean and unbiased std + 1e-5; a constant column is scaled by its own magnitude
        (:func:`aeguard.core.validation.standard_scale`), so a new value there cannot explode the score."""
        from aeguard.core.validation import standard_scale

        return standard_scale(X)

    #: parameters training never sees (scoring variants), left out of the training-cache key; merged over the MRO
    scoring_params: ClassVar[frozenset[str]] = frozenset({"verbose", "contamination"})
    #: bump when a class's training code changes, so weights cached by older code are not reused
    training_version: ClassVar[int] = 2

    @classmethod
    def _scoring_params(cls) -> frozenset[str]:
        return frozenset().union(*(vars(k).get("scoring_params", ()) for k in cls.__mro__))

    def _training_key(self, model: nn.Module, data: FitData) -> str:
        """Everything training can depend on: any parameter not declared a scoring parameter (resolved, so
        ``faithful`` counts), the initial weights (architecture and seed), the data, seed and device."""
        from aeguard.core.ensemble import Members
        from aeguard.core.training_cache import training_key

        scoring = self._scoring_params()
        params = {name: self._param(name, value) for name, value in self.get_params(deep=False).items()
                  if name not in scoring and name not in ("member_grid", "member_subsample")}
        if float(self.member_subsample) != 1.0:  # (absent at 1.0: keys from before it existed stay valid)
            params["member_subsample"] = float(self.member_subsample)
        if isinstance(model, Members) and any(model.overrides):  # the resolved values: text and dict agree
            params["member_grid"] = model.overrides  # (absent without a grid: keys from before it stay valid)
        if len(data.val_idx) == 0:  # without a hold-out these cannot change training
            params.update(early_stopping=None, restore_best=False)
        initial = [t.detach().cpu().numpy() for t in model.state_dict().values()]
        parts = {"detector": type(self).__qualname__, "version": self.training_version,
                 "model": type(model).__qualname__, "weights": list(model.state_dict()), "seed": int(data.seed),
                 "device": self.device_, "params": params}
        return training_key(parts, [data.z_train, data.z_val, data.classes, *initial])

    def _train(self, model: nn.Module, data: FitData) -> dict[str, Any]:
        """Run the stages with Lightning; with ``AEGUARD_TRAIN_CACHE`` set, an identical earlier training is
        loaded instead (``aeguard.core.training_cache``).

        ``model`` is the plugin's network, or the :class:`~aeguard.core.ensemble.Members` of an ensemble, trained
        together (``aeguard.core.ensemble.train_members``); ``n_members`` is a training parameter (in the key),
        and the key's initial weights are every member's."""
        from aeguard.core.ensemble import Members, train_members
        from aeguard.core.training import train_stages
        from aeguard.core.training_cache import cache_dir, cached_training

        def train() -> dict[str, Any]:
            cpu = time.process_time()
            if isinstance(model, Members):
                history = train_members(self, model, data)
            else:
                history = train_stages(self, model, self.stages(model, data), data)
            return {**history, "train_cpu_seconds": round(time.process_time() - cpu, 4)}

        if cache_dir() is None:
            return train()
        return cached_training(self._training_key(model, data), model, train)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, classes: np.ndarray | None = None) -> None:
        from aeguard.core.ensemble import member_overrides

        overrides = member_overrides(self)  # checks n_members and the grid before any work
        n_members = len(overrides)
        if n_members > 1:
            self._check_ensemble_scoring()
        seed = self.seed_
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.device_ = resolve_device(self._param("device", "auto"))
        if X.ndim == 4:  # images: [0, 1] by the pixel range, then per-channel statistics
            pixel_range = tuple(getattr(self, "pixel_range_", (0.0, 1.0)))
            mean, scale = ImageStandardize.statistics(X, pixel_range)
            self.standardize_ = ImageStandardize(pixel_range, mean, scale, layout=type(self).image_layout)
            z_all = self.standardize_.transform(X)
        else:
            mean, scale = self._standardize_stats(X)
            self.standardize_ = Standardize(mean, scale)
            z_all = ((X - mean) / scale).astype(np.float32)
        train_idx, val_idx = self._split(len(z_all), rng)
        n_classes = int(classes.max()) + 1 if classes is not None and len(classes) else 0
        data = FitData(z=z_all, train_idx=train_idx, val_idx=val_idx, seed=seed, classes=classes,
                       n_classes=n_classes)
        self.split_ = {"n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "seed": int(seed),
                       "val_fraction": float(self._param("val_fraction", 0.0) or 0.0)}
        self.prepare(data)
        if n_members > 1:
            self._fit_ensemble(data, overrides)
            return
        model = self.build_model(data)
        self.ensemble_ = None
        self.history_ = self._train(model, data)
        model = model.to("cpu").eval()
        with torch.no_grad():
            self.fit_after_training(model, data)
        target, fit_targets = self.make_target(model, data)
        self.model_ = model
        self.target_ = target
        self._fit_targets = fit_targets
        self._build_graph()

    def _check_ensemble_scoring(self) -> None:
        """Refuse ``n_members > 1`` for a class that computes its fit-set scores itself (``_fit_scores``): those
        reach into the model (a leave-own-row-out kNN, a custom threshold path), which the ensemble cannot
        combine member by member. Everything that scores through ``score_against`` is combined in the graph."""
        mro = type(self).__mro__
        own = [k.__name__ for k in mro[:mro.index(DeepDetector)] if "_fit_scores" in vars(k)]
        if own:
            raise ValueError(f"n_members > 1 is not available for {type(self).__name__}: {own[0]} computes its "
                             "fit-set scores itself (_fit_scores), which an ensemble cannot combine; use n_members=1")

    def _fit_ensemble(self, data: FitData, overrides: list[dict[str, Any]]) -> None:
        """``len(overrides)`` networks, each built, trained and finished by the plugin's own hooks with its grid
        values set (``member_grid``; none: the detector's own values), then combined on a common scale in one
        model (``aeguard.core.ensemble``). Member 0 is drawn where the single model is, member ``i`` after
        ``member_seed(seed, i)``; data, split and ``prepare`` statistics are shared, so grid values that would
        change what ``prepare`` computes are refused here, on the data."""
        from aeguard.core.ensemble import (
            EnsembleModel,
            Members,
            check_shared_prepare,
            fit_scales,
            member_seed,
            member_view,
        )

        n_members = len(overrides)
        grid = any(overrides)
        if grid and type(self).prepare is not DeepDetector.prepare:
            check_shared_prepare(self, data, overrides)
        models = []
        for i, values in enumerate(overrides):
            if i > 0:
                torch.manual_seed(member_seed(data.seed, i))
            with member_view(self, values):
                models.append(self.build_model(data))
        torch.manual_seed(data.seed)
        members = Members(models, overrides)
        self.history_ = self._train(members, data)
        targets: list[tuple[nn.Module | None, np.ndarray | None]] = []
        for model, values in zip(models, overrides):
            model.to("cpu").eval()
            with member_view(self, values):
                with torch.no_grad():
                    self.fit_after_training(model, data)
                targets.append(self.make_target(model, data))
        target, fit_targets = targets[0]
        for _, other in targets[1:]:
            same = (other is None) == (fit_targets is None) and (other is None or np.array_equal(other, fit_targets))
            if not same:
                raise ValueError(f"{type(self).__name__}: n_members > 1 needs one target shared by all members, "
                                 "but this detector's make_target gave different targets per member")
        if grid:
            self._check_member_outputs(models, data, fit_targets, overrides)
        centers, scales, n_contrib = fit_scales(models, data.z, fit_targets)
        self.model_ = EnsembleModel(models, centers, scales, n_contrib).eval()
        self.target_ = target
        self._fit_targets = fit_targets
        training = self.history_.get("ensemble", {})
        self.ensemble_ = {
            "n_members": n_members, "member_seeds": [member_seed(data.seed, i) for i in range(n_members)],
            "combination": "mean over members of (score - median) / (1.4826 MAD), fit-set statistics per member",
            "centers": centers, "scales": scales, **{k: v for k, v in training.items() if k != "n_members"},
        }
        if grid:
            self.ensemble_.update(member_grid=self.member_grid if isinstance(self.member_grid, str)
                                  else {k: list(v) if isinstance(v, (list, tuple)) else [v]
                                        for k, v in self.member_grid.items()},
                                  member_overrides=overrides)
        self._build_graph()

    @staticmethod
    def _check_member_outputs(models: list[nn.Module], data: FitData, fit_targets: np.ndarray | None,
                              overrides: list[dict[str, Any]]) -> None:
        """The graph combines the members output by output: refuse grid values under which a member scores with
        other outputs (names or shapes) than member 0."""
        z = torch.from_numpy(np.ascontiguousarray(data.z[:2], dtype=np.float32))
        t = z if fit_targets is None else torch.from_numpy(np.ascontiguousarray(fit_targets[:2], dtype=np.float32))
        with torch.no_grad():
            shapes = [{k: tuple(v.shape) for k, v in m.score_against(z, t).items()} for m in models]
        for i, found in enumerate(shapes[1:], start=1):
            if found != shapes[0]:
                raise ValueError(f"member_grid: member {i} ({overrides[i]}) scores with outputs {found}, member 0 "
                                 f"({overrides[0]}) with {shapes[0]}; one graph needs the same outputs from every "
                                 "member, so keep that parameter out of the grid")

    def _build_graph(self) -> None:
        probe = torch.zeros(2, *self._row_shape())
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

        self.bytes_per_row_ = bytes_per_row(self.graph_, self._row_shape())

    def _row_shape(self) -> tuple[int, ...]:
        """The shape of one raw input row: (d,) or (C, H, W); fits from before images have no input_shape_."""
        return tuple(getattr(self, "input_shape_", (self.n_features_in_,)))

    def _run_graph(self, X: np.ndarray) -> dict[str, np.ndarray]:
        from aeguard.core.chunks import chunk_rows, run_chunked

        def one(xb: np.ndarray) -> dict[str, np.ndarray]:
            out = self.graph_(torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)))
            return {name: t.numpy() for name, t in zip(self.output_names_, out)}

        with torch.no_grad(), torch_threads():
            return run_chunked(one, X, chunk_rows(self.bytes_per_row_), self.output_names_)

    def _to_output(self, outs: dict[str, np.ndarray]) -> ScoreOutput:
        return ScoreOutput.from_outputs(outs)

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
        return export_graph(self.graph_, self._row_shape(), self.output_names_, path, variant=variant)


def epochs_to_steps(epochs: int, epochs_per_step: int) -> int:
    return max(1, math.ceil(epochs / max(1, epochs_per_step)))
