"""`apre`: probabilistic autoencoder trained with PRE, scored with WNLL and (by default) mean-shift scoring."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.deep import DeepDetector, FitData, adam
from aeguard.core.params import TRAINING_SPEC, Bool, Choice, Float, Spec
from aeguard.plugins.apre.torch_model import ProbabilisticAutoEncoder, pre_loss
from aeguard.plugins.mss import MSSMixin

#: the authors' training settings (``run_main.sh``, ``libs/train.py``), applied by ``faithful=True``
FAITHFUL = {"epochs": 5000, "lr": 1e-3, "batch_size": None, "val_fraction": 0.0, "early_stopping": None,
            "restore_best": False, "var_floor": "none"}

VAR_FLOORS = ("none", "shift")

#: fit sets at least this large train feature-major (see ``ProbabilisticAutoEncoder.forward_t``)
FEATURE_MAJOR_ROWS = 10000



class APREDetector(MSSMixin, DeepDetector):
    """PAE trained with PRE (Gaussian NLL, a = b = 1) and scored with APRE(alpha, beta) = WNLL.

    With ``mss=True`` (default) the score's target is the kNN mean-shifted input (MSS-WNLL, ``m = mss_m``,
    ``k = mss_k`` or ``clip(round(sqrt(n_fit)), 5, 100)``); the network always sees the original input.
    ``explain`` gives per-feature ``alpha (t_j - mu_j)^2 / v_j + beta log v_j``, which sum to the score.

    Label-free defaults (aeguard; measured over the ODDS sets in ``docs/apre.md``). Trained as the authors do
    (full batch, Adam 1e-3, StepLR(1000, 0.5), at most 5000 epochs), with two changes that need no label:

    - ``var_floor="shift"``: the variance in the score is ``s2 + f_j``, where ``f_j`` is the fit set's mean
      squared mean-shift of feature j. MSS moves the target by the shift, so its variance is the PAE's ``s2``
      plus the shift's. Without it, ``s2`` learns the (small) noise of inliers, an inlier's shift is divided
      by it and MSS-WNLL inverts on several sets (the collapse of ``apre.md`` section 11). Only used with MSS.
    - early stopping on the PRE of a seeded, unlabelled 1/6 hold-out (``val_fraction``), checked every
      ``epochs_per_step`` epochs, patience ``early_stopping`` epochs (500), best weights restored
      (``restore_best``). It stops where the held-out likelihood stops improving (small sets) and saves time.

    ``faithful=True`` is the authors' setting: 5000 epochs on the whole fit set, last-epoch weights, no floor.

    Parameters beyond the shared deep ones (see :class:`~aeguard.core.deep.DeepDetector`):

    - ``alpha``, ``beta``: score weights (0.5, 2 as shipped by the authors); only the ratio beta/alpha changes
      the ranking; alpha = beta gives the NLL ranking.
    - ``mss``, ``mss_k``, ``mss_m``, ``mss_max_ref``, ``mss_cap_k``: mean-shift scoring (``aeguard.plugins.mss``).
    - ``var_floor``: "shift" (default) or "none" (the authors' score).
    """

    faithful_settings = FAITHFUL

    #: types and ranges of the hyperparameters (aeguard.core.params); the mss* ones come from MSSMixin
    #: images go through the flattened path, standardized per channel (aeguard.core.deep.ImageStandardize)
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")
    #: training is PRE with a = b = 1 whatever the score weights; the floor is a scoring rule
    scoring_params: ClassVar[frozenset[str]] = frozenset({"alpha", "beta", "var_floor"})
    training_version: ClassVar[int] = 3
    param_spec: ClassVar[dict[str, Spec]] = {
        **TRAINING_SPEC, "alpha": Float(low=0), "beta": Float(low=0),
        "var_floor": Choice(choices=VAR_FLOORS, none=True, none_means="'none'"), "faithful": Bool(),
        "restore_best": Bool(),
    }

    def __init__(self, epochs: int = 5000, lr: float = 1e-3, alpha: float = 0.5, beta: float = 2.0,
                 mss: bool = True, mss_k: int | None = None, mss_m: int = 1, mss_max_ref: int | None = 10000,
                 mss_cap_k: str = "same", var_floor: str = "shift", faithful: bool = False,
                 batch_size: int | None = None, val_fraction: float = 1 / 6, early_stopping: int | None = 500,
                 restore_best: bool = True, epochs_per_step: int = 50, contamination: Any = 0.1,
                 random_state: int | None = None, device: str = "auto", verbose: bool = False) -> None:
        self.epochs = epochs
        self.lr = lr
        self.alpha = alpha
        self.beta = beta
        self.mss = mss
        self.mss_k = mss_k
        self.mss_m = mss_m
        self.mss_max_ref = mss_max_ref
        self.mss_cap_k = mss_cap_k
        self.var_floor = var_floor
        self.faithful = faithful
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.early_stopping = early_stopping
        self.restore_best = restore_best
        self.epochs_per_step = epochs_per_step
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # --- settings ----------------------------------------------------------------------------------

    def _var_floor(self) -> str:
        """The floor setting; ``None`` (what a benchmark spec ``var_floor=none`` parses to) means "none"."""
        value = self._param("var_floor", "none")
        return "none" if value is None else value

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if self._var_floor() not in VAR_FLOORS:
            raise ValueError(f"var_floor must be one of {VAR_FLOORS}, got {self.var_floor!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        super()._fit(X, y)

    # --- DeepDetector hooks --------------------------------------------------------------------------

    def _train(self, model: nn.Module, data: FitData) -> dict[str, Any]:
        try:
            return super()._train(model, data)
        finally:
            self.__dict__.pop("_zt_last", None)

    def build_model(self, data: FitData) -> nn.Module:
        return ProbabilisticAutoEncoder(data.n_features, alpha=self.alpha, beta=self.beta)

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """PRE (a = b = 1); large batches run feature-major (same loss, faster skinny matmuls on CPU)."""
        if z.shape[0] >= FEATURE_MAJOR_ROWS:
            z_t = self._feature_major(z)
            mu, s2 = model.forward_t(z_t)
            return pre_loss(mu, s2, z_t, batch_dim=1)
        mu, s2 = model(z)
        return pre_loss(mu, s2, z)

    def _feature_major(self, z: torch.Tensor) -> torch.Tensor:
        """``z.T`` made contiguous once per batch tensor (full batch: once per fit, not once per epoch).

        The cache holds the last batch tensor itself and matches by identity: a key such as ``data_ptr()``
        comes back for a new mini-batch once the allocator reuses the freed memory (stale batches).
        """
        last = self.__dict__.get("_zt_last")
        if last is None or last[0] is not z:
            last = (z, z.t().contiguous())
            self.__dict__["_zt_last"] = last
        return last[1]

    def configure_optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """Adam 1e-3 with StepLR(1000, 0.5) per epoch, as the authors (``core.deep.adam``: the fused kernel)."""
        optimizer = adam(model.parameters(), lr=self._param("lr", 1e-3))
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1000, gamma=0.5)

    def make_target(self, model: nn.Module, data: FitData) -> tuple[nn.Module | None, np.ndarray | None]:
        target, fit_targets = super().make_target(model, data)
        if self._var_floor() == "shift" and fit_targets is not None:
            shift2 = (fit_targets.astype(np.float64) - data.z) ** 2
            model.set_var_floor(torch.as_tensor(shift2.mean(axis=0), dtype=torch.float32))
        return target, fit_targets
