"""`mahalanobis`: autoencoder scored by latent Mahalanobis distance plus reconstruction error (Denouden et al.).

Score ``alpha * D_M(x) + beta * l(x)`` (``mahalanobis.md``): ``D_M`` is the Mahalanobis distance of the latent code
to the Gaussian of the encoded training rows, ``l`` the per-sample mean reconstruction error, ``alpha`` and
``beta`` reciprocal scales of the two terms on the held-out split. Everything after training (covariance,
whitening, scales) is numpy; the graph only sees the constants ``mu``, ``W``, ``alpha`` and ``beta``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.deep import DeepDetector, FitData, Stage, adam
from aeguard.core.params import TRAINING_SPEC, Bool, Choice, Int, Spec
from aeguard.plugins.mahalanobis.torch_model import LatentMahalanobis, MahalanobisAutoEncoder, latent_size
from aeguard.plugins.mss import MSSMixin

COVARIANCES = ("ledoit_wolf", "empirical", "mcd")
SCALES = ("mad", "std")
CLASS_MODES = ("auto", "per_class", "tied", "none")
LOSSES = ("auto", "mse", "bce")
OPTIMIZERS = ("adam", "adadelta")
TERMS = ("both", "latent", "recon")

#: the paper's settings (spec sections 3, 4 and 8), applied by ``faithful=True`` over the given values
FAITHFUL = {"optimizer": "adadelta", "lr": 1.0, "epochs": 500, "early_stopping": 20, "covariance": "empirical",
            "scale": "std", "loss": "auto"}

#: MCD is fitted on at most this many (seeded, uniformly drawn) rows (spec section 4)
MCD_MAX_ROWS = 20000
#: ridge ``eps = RIDGE * trace(S) / m`` (spec section 4), floored at ``RIDGE_FLOOR`` for a constant latent
RIDGE = 1e-6
RIDGE_FLOOR = 1e-12
#: the normal-consistency factor of the MAD
MAD_FACTOR = 1.4826
#: rows encoded at once after training (bounds memory on large image sets)
ENCODE_ROWS = 4096


# --- numpy: Gaussians, whitening, scales -------------------------------------------------------------------
def fit_gaussian(codes: np.ndarray, method: str, seed: int = 0,
                 assume_centered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Location and covariance of latent codes: ``empirical`` (mean, unbiased sample covariance), ``ledoit_wolf``
    (mean, sklearn ``LedoitWolf``) or ``mcd`` (sklearn ``MinCovDet``'s robust location and covariance, seeded,
    on at most :data:`MCD_MAX_ROWS` rows). ``assume_centered``: residuals of the ``tied`` mode (location 0)."""
    codes = np.asarray(codes, dtype=np.float64)
    n, m = codes.shape
    if n < 2:
        raise ValueError(f"a latent Gaussian needs at least 2 training rows, got {n}")
    mean = np.zeros(m) if assume_centered else codes.mean(axis=0)
    if method == "empirical":
        centered = codes - mean
        return mean, centered.T @ centered / (n - 1)
    if method == "ledoit_wolf":
        from sklearn.covariance import LedoitWolf

        return mean, LedoitWolf(assume_centered=assume_centered).fit(codes).covariance_
    if method == "mcd":
        from sklearn.covariance import MinCovDet

        if n <= m + 1:
            raise ValueError(f"covariance='mcd' needs more training rows than latent dimensions + 1, got {n} rows "
                             f"for m = {m}; use 'ledoit_wolf'")
        if n > MCD_MAX_ROWS:
            codes = codes[np.sort(np.random.default_rng(seed).choice(n, MCD_MAX_ROWS, replace=False))]
        with warnings.catch_warnings():  # "Determinant has increased": a benign C-step rounding note of sklearn
            warnings.filterwarnings("ignore", message="Determinant has increased", category=RuntimeWarning)
            mcd = MinCovDet(random_state=seed, assume_centered=assume_centered).fit(codes)
        return (mean if assume_centered else mcd.location_), mcd.covariance_
    raise ValueError(f"covariance must be one of {COVARIANCES}, got {method!r}")


def fit_gaussian_robustly(codes: np.ndarray, method: str, seed: int = 0,
                          assume_centered: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`fit_gaussian` and the estimator it used: when MCD's support (about half the rows, the most
    concentrated ones) has zero covariance, which happens when an encoder maps many rows to one code (a dead-ReLU
    region), MCD has nothing robust to offer and sklearn raises; Ledoit-Wolf on all codes is used instead, with a
    warning, and the manifest records it (``extra.mahalanobis.covariance_used``)."""
    try:
        return (*fit_gaussian(codes, method, seed, assume_centered), method)
    except ValueError as exc:
        if method != "mcd" or "support data is equal to 0" not in str(exc):
            raise
        warnings.warn(f"covariance='mcd': the MCD support of {len(codes)} latent codes is degenerate (its "
                      "covariance is 0: many rows encode to one point); using 'ledoit_wolf' on all codes",
                      RuntimeWarning, stacklevel=2)
        return (*fit_gaussian(codes, "ledoit_wolf", seed, assume_centered), "ledoit_wolf")


def ridge(cov: np.ndarray, spread: float | None = None) -> tuple[np.ndarray, float]:
    """``S + eps I`` with ``eps = 1e-6 * spread / m`` (floored at 1e-12, so a constant latent stays invertible).

    ``spread`` is the trace of the sample covariance of the codes the Gaussian was fitted on (default
    ``trace(S)``). It equals the spec's ``trace(S)`` for ``empirical`` and, up to ``(n - 1) / n``, for Ledoit-Wolf
    (shrinkage keeps the trace); for MCD, whose support can be degenerate when many codes coincide (an encoder's
    dead-ReLU region maps them to one point), it ties the ridge to the spread of all codes, so float32 noise in a
    zero-variance direction is not amplified a million-fold.
    """
    m = cov.shape[0]
    eps = max(RIDGE * float(np.trace(cov) if spread is None else spread) / m, RIDGE_FLOOR)
    return cov + eps * np.eye(m), eps


def whitening(cov_reg: np.ndarray, eps: float) -> tuple[np.ndarray, str]:
    """``W`` with ``W^T W = S_reg^{-1}``: the inverse lower Cholesky factor, else (numerically not positive
    definite) ``diag(lambda)^{-1/2} U^T`` with eigenvalues floored at ``eps`` (the ``pinvh`` equivalent)."""
    from scipy.linalg import solve_triangular

    try:
        chol = np.linalg.cholesky(cov_reg)
        return solve_triangular(chol, np.eye(len(cov_reg)), lower=True), "cholesky"
    except np.linalg.LinAlgError:
        lam, vecs = np.linalg.eigh((cov_reg + cov_reg.T) / 2)
        return (vecs / np.sqrt(np.maximum(lam, eps))).T, "eigh"


def robust_scale(values: np.ndarray, kind: str) -> float:
    """``1.4826 * MAD`` (robust to outliers in the hold-out) or the sample std; zero or undefined becomes 1."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "mad":
        scale = MAD_FACTOR * float(np.median(np.abs(values - np.median(values)))) if len(values) else 0.0
    elif kind == "std":
        scale = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    else:
        raise ValueError(f"scale must be one of {SCALES}, got {kind!r}")
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _adadelta(parameters: list[nn.Parameter], stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
    # The paper names Adadelta only; rho 0.95 and eps 1e-7 are Keras' defaults of the time (aeguard's reading).
    return torch.optim.Adadelta(parameters, lr=stage.lr, rho=0.95, eps=1e-7), None


def _adam(parameters: list[nn.Parameter], stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
    return adam(parameters, lr=stage.lr), None


class MahalanobisDetector(MSSMixin, DeepDetector):
    """Autoencoder with a linear latent; score ``alpha * D_M + beta * l`` (Denouden et al., arXiv 1812.02765).

    Fit: train the AE on the training part of a seeded, unlabelled split (``val_fraction`` = 1/6 held out; Adam
    1e-3, batches of 256, at most 500 epochs, early stopping after ``early_stopping`` = 20 epochs without a lower
    validation reconstruction loss, best weights restored). Then encode the training rows, fit ``mu`` and ``S``
    (``covariance``), add the ridge ``1e-6 trace(S) / m``, whiten (inverse Cholesky factor ``W``, a graph
    constant), and set ``alpha = 1 / scale(D_M)``, ``beta = 1 / scale(l)`` on the held-out rows (``scale``:
    ``mad`` = 1.4826 MAD, or ``std``). Without a hold-out (``val_fraction = 0`` or too few rows) both scales are
    measured on the training rows, which the Gaussian was fitted on (so ``D_M`` there is optimistic); the
    manifest says which rows were used (``extra.mahalanobis.scales_from``), and early stopping is off.

    ``explain``: per feature ``beta (x_j - x^_j)^2 / D`` (the BCE term for images) plus the latent term
    ``alpha D_M`` spread evenly over the D features (a latent distance has no exact per-feature split; the even
    share keeps the sum equal to the score and leaves the ranking of features to the reconstruction term).
    Components ``d_m`` (= ``alpha D_M``) and ``recon`` (= ``beta l``) say which term fired;
    :meth:`explain_latent` gives the per-latent terms ``alpha (z - mu)_k (P (z - mu))_k / D_M`` (sum ``alpha D_M``).

    Class labels (``fit(X, classes=...)``, Lee et al. 2018; not in the paper): ``class_mode="per_class"`` (the
    default with classes) fits one Gaussian per class, ``"tied"`` per-class means with one covariance of the
    within-class residuals; ``D_M = min_c D_M,c`` and the nearest class code is the int component ``class``
    (``class_labels_[class]`` is the label). ``"none"`` keeps the single Gaussian. Without classes the single
    Gaussian of the paper is used (``auto``).

    Parameters beyond the shared deep ones (see :class:`~aeguard.core.deep.DeepDetector`):

    - ``latent``: m (None: ``clip(D // 4, 2, 32)`` for tables, 32 for images);
    - ``covariance``: ``ledoit_wolf`` (default), ``empirical`` (faithful) or ``mcd``;
    - ``scale``: ``mad`` (default) or ``std`` (faithful);
    - ``class_mode``: ``auto``, ``per_class``, ``tied`` or ``none``;
    - ``loss``: ``auto`` (BCE with a sigmoid output on [0, 1] pixels for images, else MSE), ``mse`` or ``bce``
      (images only);
    - ``optimizer``: ``adam`` (default) or ``adadelta``;
    - ``terms``: ``both`` (default), or the ablations ``latent`` (``beta = 0``) and ``recon`` (``alpha = 0``);
    - ``faithful``: the paper's settings (Adadelta lr 1.0, 500 epochs, patience 20, empirical covariance, std
      scales) over the given ones;
    - ``mss``, ``mss_*``: mean-shift scoring of the reconstruction term (``aeguard.plugins.mss``); the network and
      the latent term always see the original input.
    """

    faithful_settings = FAITHFUL

    accepts_classes: ClassVar[bool] = True
    #: images arrive as flat standardized rows (the base's per-channel statistics); the model reshapes them
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")
    #: types and ranges of the hyperparameters (aeguard.core.params); the mss* ones come from MSSMixin
    #: fitted after training on the encoded rows; the network never sees them
    scoring_params: ClassVar[frozenset[str]] = frozenset({"covariance", "scale", "terms", "class_mode"})
    param_spec: ClassVar[dict[str, Spec]] = {
        **TRAINING_SPEC, "latent": Int(low=1, none=True, none_means="clip(D // 4, 2, 32); images 32"),
        "covariance": Choice(choices=COVARIANCES), "scale": Choice(choices=SCALES),
        "class_mode": Choice(choices=CLASS_MODES), "loss": Choice(choices=LOSSES),
        "optimizer": Choice(choices=OPTIMIZERS), "faithful": Bool(), "restore_best": Bool(),
        "terms": Choice(choices=TERMS),
    }

    def __init__(self, latent: int | None = None, covariance: str = "ledoit_wolf", scale: str = "mad",
                 class_mode: str = "auto", loss: str = "auto", optimizer: str = "adam", terms: str = "both",
                 faithful: bool = False,
                 epochs: int = 500, lr: float = 1e-3, batch_size: int | None = 256, val_fraction: float = 1 / 6,
                 early_stopping: int | None = 20, restore_best: bool = True, epochs_per_step: int = 50,
                 mss: bool = False, mss_k: int | None = None, mss_m: int = 1, mss_max_ref: int | None = 10000,
                 mss_cap_k: str = "same", contamination: Any = 0.1, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False) -> None:
        self.latent = latent
        self.covariance = covariance
        self.scale = scale
        self.class_mode = class_mode
        self.loss = loss
        self.optimizer = optimizer
        self.terms = terms
        self.faithful = faithful
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.early_stopping = early_stopping
        self.restore_best = restore_best
        self.epochs_per_step = epochs_per_step
        self.mss = mss
        self.mss_k = mss_k
        self.mss_m = mss_m
        self.mss_max_ref = mss_max_ref
        self.mss_cap_k = mss_cap_k
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # --- settings ----------------------------------------------------------------------------------

    def _class_mode(self, data: FitData) -> str:
        mode = self._param("class_mode", "auto")
        if data.classes is None:
            if mode in ("per_class", "tied"):
                raise ValueError(f"class_mode={mode!r} needs class labels: fit(X, classes=...)")
            return "none"
        return "per_class" if mode == "auto" else mode

    def _image_shape(self) -> tuple[int, int, int] | None:
        shape = getattr(self, "image_shape_", None)
        return None if shape is None else tuple(int(v) for v in shape)  # type: ignore[return-value]

    def _loss(self) -> str:
        loss = self._param("loss", "auto")
        if loss == "bce" and self._image_shape() is None:
            raise ValueError("loss='bce' is for image inputs (pixels in [0, 1]); tables use 'mse' or 'auto'")
        if loss == "auto":
            return "bce" if self._image_shape() is not None else "mse"
        return loss

    # --- DeepDetector hooks ------------------------------------------------------------------------
    def build_model(self, data: FitData) -> nn.Module:
        """MLP for tables, the conv AE for images (rows reshaped to C x H x W inside the model)."""
        image = self._image_shape()
        m = self._param("latent", None)
        if m is None:
            m = 32 if image is not None else latent_size(data.n_features)
        self.loss_ = self._loss()
        unit = None
        if self.loss_ == "bce":  # back to [0, 1] pixels: the inverse of the base's per-channel standardization
            per_pixel = int(np.prod(image[1:]))
            unit = tuple(np.repeat(getattr(self.standardize_, name).numpy().reshape(-1).astype(np.float64), per_pixel)
                         for name in ("mean", "scale"))
        return MahalanobisAutoEncoder(image or (data.n_features,), int(m), loss=self.loss_, unit=unit)

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return model.training_loss(z)

    def stages(self, model: nn.Module, data: FitData) -> list[Stage]:
        """One stage; validation reconstruction loss checked every epoch, so ``early_stopping`` counts epochs."""
        patience = self._param("early_stopping", None)
        optimizer = _adadelta if self._param("optimizer", "adam") == "adadelta" else _adam
        return [Stage(name="fit", loss=self.training_loss, epochs=int(self._param("epochs", 500)),
                      batch_size=self._param("batch_size", None), lr=float(self._param("lr", 1e-3)),
                      optimizer=optimizer, patience=patience, val_every=1 if patience is not None else None,
                      restore_best=bool(self._param("restore_best", True)),
                      epochs_per_step=int(self._param("epochs_per_step", 50)))]

    def fit_after_training(self, model: nn.Module, data: FitData) -> None:
        """Gaussians of the encoded training rows, whitening factors, then the two scales on the hold-out."""
        mode = self._class_mode(data)
        method = self._param("covariance", "ledoit_wolf")
        codes = _encode(model, data.z_train)
        seed = int(data.seed)
        if mode == "none":
            groups = [np.arange(len(codes))]
        else:
            labels = data.classes_train
            groups = [np.flatnonzero(labels == c) for c in range(data.n_classes)]
            for c, rows in enumerate(groups):
                if len(rows) < 2:
                    raise ValueError(f"class {_plain(self.class_labels_[c])!r} has {len(rows)} training row(s); "
                                     f"class_mode={mode!r} needs at least 2 per class")
        if mode == "tied":
            mus = np.stack([codes[rows].mean(axis=0) for rows in groups])
            residuals = codes - mus[data.classes_train]
            _, cov, used = fit_gaussian_robustly(residuals, method, seed, assume_centered=True)
            estimators = [used]
            dof = max(1, len(codes) - len(groups))  # pooled within-class covariance: n - K degrees of freedom
            if method == "empirical":
                cov = cov * (len(codes) - 1) / dof
            covs, spreads = [cov], [float((residuals ** 2).sum()) / dof]
        else:
            fits = [fit_gaussian_robustly(codes[rows], method, seed) for rows in groups]
            mus = np.stack([mu for mu, _, _ in fits])
            covs = [cov for _, cov, _ in fits]
            estimators = [used for _, _, used in fits]
            spreads = [float(np.var(codes[rows], axis=0, ddof=1).sum()) for rows in groups]
        whitens, eps, methods = [], [], []
        for cov, spread in zip(covs, spreads):
            cov_reg, e = ridge(cov, spread)
            w, how = whitening(cov_reg, e)
            whitens.append(w)
            eps.append(e)
            methods.append(how)
        whiten = whitens[0] if len(whitens) == 1 else np.stack(whitens)
        model.latent = LatentMahalanobis(mus, whiten, alpha=1.0, with_class=mode != "none")
        self.gaussians_ = {"class_mode": mode, "covariance": method, "covariance_used": estimators,
                           "n_gaussians": int(len(mus)),
                           "latent": int(model.m), "ridge_eps": [float(e) for e in eps], "whitening": methods,
                           "n_train": int(len(codes))}
        rows = data.z_val if data.z_val is not None else data.z_train
        self.scales_from_ = "validation" if data.z_val is not None else "training"
        d_rows, r_rows = _terms(model, rows, rows)
        kind = self._param("scale", "mad")
        terms = self._param("terms", "both")
        self.alpha_ = 0.0 if terms == "recon" else 1.0 / robust_scale(d_rows, kind)
        self.beta_ = 0.0 if terms == "latent" else 1.0 / robust_scale(r_rows, kind)
        model.latent.alpha.fill_(self.alpha_)
        model.beta.fill_(self.beta_)

    def make_target(self, model: nn.Module, data: FitData) -> tuple[nn.Module | None, np.ndarray | None]:
        """With ``mss``: the kNN mean-shifted target (MSSMixin), and ``beta`` re-measured against it on the same
        rows, so the reconstruction term keeps unit scale when it is scored against the shifted target."""
        target, fit_targets = super().make_target(model, data)
        if fit_targets is not None and self._param("terms", "both") != "latent":
            rows = data.val_idx if len(data.val_idx) else data.train_idx
            _, r_rows = _terms(model, data.z[rows], fit_targets[rows])
            self.beta_ = 1.0 / robust_scale(r_rows, self._param("scale", "mad"))
            model.beta.fill_(self.beta_)
        return target, fit_targets

    def manifest_extra(self) -> dict[str, Any]:
        extra = super().manifest_extra()
        if hasattr(self, "alpha_"):
            block = {**self.gaussians_, "terms": self._param("terms", "both"),
                     "alpha": self.alpha_, "beta": self.beta_, "scale": self._param("scale", "mad"),
                     "scales_from": self.scales_from_, "loss": self.loss_,
                     "optimizer": self._param("optimizer", "adam"), "faithful": bool(self.faithful)}
            if hasattr(self, "class_labels_"):
                block["class_labels"] = [_plain(v) for v in self.class_labels_]
            extra["mahalanobis"] = block
        return extra

    # --- explanations ------------------------------------------------------------------------------
    def explain_latent(self, X: Any) -> Any:
        """Per-latent terms ``alpha (z - mu)_k (P (z - mu))_k / D_M`` of the nearest Gaussian (in process only);
        each row sums to the ``d_m`` component (0 where ``D_M = 0``). Columns ``z0 .. z{m-1}``."""
        import pandas as pd

        arr = self._validate(X)
        with torch.no_grad():
            z = self.standardize_(torch.from_numpy(arr.astype(np.float32)))
            code = self.model_.encode(z)
            latent = self.model_.latent
            white = latent.whitened(code)  # K x B x m
            dist = torch.sqrt((white ** 2).sum(dim=-1))
            nearest = torch.argmin(dist, dim=0)
            rows = torch.arange(len(code))
            u = white[nearest, rows].double()
            diff = (code - latent.mu[nearest]).double()
            w_t = latent.whiten_t.double() if latent.shared else latent.whiten_t.double()[nearest]
            p_diff = (w_t @ u.unsqueeze(-1)).squeeze(-1)  # W^T u = P (z - mu)
            d = torch.sqrt((u ** 2).sum(dim=1))
            terms = float(latent.alpha) * diff * p_diff / torch.where(d > 0, d, torch.ones_like(d)).unsqueeze(1)
        return pd.DataFrame(terms.numpy(), columns=[f"z{k}" for k in range(terms.shape[1])])


def _plain(value: Any) -> Any:
    """A numpy scalar label as the Python value it holds (for messages and JSON)."""
    return value.item() if hasattr(value, "item") else value


@torch.no_grad()
def _encode(model: MahalanobisAutoEncoder, z: np.ndarray) -> np.ndarray:
    parts = [model.encode(torch.from_numpy(np.ascontiguousarray(z[i:i + ENCODE_ROWS]))).numpy()
             for i in range(0, len(z), ENCODE_ROWS)]
    return np.concatenate(parts).astype(np.float64)


@torch.no_grad()
def _terms(model: MahalanobisAutoEncoder, z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled ``D_M`` (nearest Gaussian) and ``l`` of rows ``z`` against ``target``."""
    d_parts, r_parts = [], []
    for i in range(0, len(z), ENCODE_ROWS):
        zb = torch.from_numpy(np.ascontiguousarray(z[i:i + ENCODE_ROWS], dtype=np.float32))
        tb = torch.from_numpy(np.ascontiguousarray(target[i:i + ENCODE_ROWS], dtype=np.float32))
        code = model.encode(zb)
        d_parts.append(model.latent.distances(code).min(dim=0).values.numpy())
        r_parts.append(model.recon_terms(model.decode(code), tb).sum(dim=1).numpy())
    return np.concatenate(d_parts).astype(np.float64), np.concatenate(r_parts).astype(np.float64)
