"""`sae_ood`: SAE-feature OOD (aeguard scoring), a TopK sparse autoencoder scored in code space.

Spec: ``shared/specs/sae_ood.md``. Provenance (spec section 10):

- Gao et al.'s released code (``openai/sparse_autoencoder``): the TopK SAE (``b_enc`` and ReLU after the
  selection), tied init with unit-norm decoder columns, the encoder rescale of ``init_from_data_``,
  ``b_pre`` = geometric median of up to 32,768 training rows, normalised MSE, AuxK (coefficient 1/32, dead
  latents by samples since they last fired with a value > 1e-3), decoder gradient projection and
  renormalisation after every step, Adam with eps 6.25e-10, Multi-TopK as an option.
- Makhzani & Frey: encode-time ``alpha * k`` and the k-annealing schedule (options).
- Oh et al. (abstract level): class activation profiles behind ``s_cap``.
- aeguard design (Olson et al.'s score is not public): the score ``s_rec / scale_rec + s_knn / scale_knn``
  (normalised residual plus mean distance to the K = 10 nearest reference codes), each scaled by
  ``1.4826 * MAD`` on the held-out 1/6 (``std`` with ``faithful=True``, Denouden), sizes and k rules, dead
  threshold in samples, batch 256 / 100 epochs, frequencies, trimming and the capped reference set.

Departure from the spec (aeguard, decided on measurements): ``knn_metric="euclidean"`` is the default in both
input modes, where the spec's ``s_knn`` is the cosine distance between codes. The cosine discards the code's
magnitude, and pre-activations are linear in ``x - b_pre``: a point far out along a typical direction fires the
same atoms as a moderate point, only harder, while points near ``b_pre`` get small, noisy codes whose atoms
vary. The cosine ``s_knn`` therefore ranks below chance (ODDS wbc 0.15, cardio 0.30; MVTec 0.41) and pulls the
sum under plain ``ae``; the Euclidean distance between the raw codes keeps the magnitude (ODDS 5 sets: 0.809
vs ``ae`` 0.762). ``knn_metric="cosine"`` keeps the spec's score. The scoring is aeguard's design, not the
paper's, so ``faithful=True`` does not switch it (docs/sae_ood.md, "Analysis").

Choices the spec leaves open (made here):

- Dead-latent counters live on the model and are updated in the stage's ``after_step`` from the training
  batch just stepped on (the loss leaves the fired mask there); the validation loss is a separate function
  that never touches them, so only training rows are counted.
- ``input_mode="embedding"`` skips the per-feature standardisation (backbone features are commensurable) and
  turns Gao's per-sample layer norm on by default; k = 32 when d >= 512.
- ``lr`` is 1e-3 in both input modes (the spec's table has 1e-4 for features). At 1e-4 the fits here are
  under-trained: aeguard's budget is 100 epochs, and a fit split of a few hundred embeddings is one batch, so
  100 Adam steps, where Gao et al. take millions. On the 15 MVTec categories (seed 0) the held-out NMSE at the
  last epoch fell by 2-3x at 1e-3 and was still falling at 1e-4 (label-free; docs/sae_ood.md, "Under-training").
- ``s_rec`` is in the normalised space (standardised or layer-normed), its denominator the mean total
  variance of the normalised training rows; with ``mss=True`` the residual is taken against the normalised
  mean-shifted target.
- Fit-set scores: every training row that is a reference row leaves its own reference code out of its kNN
  (``core.reference`` ``own_rows``); ``s_rare`` uses frequencies that include the row itself (one count in N).
- ``contrib``: see :meth:`SparseAutoencoder.score_against` (code-space terms spread by decoded energy).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.deep import DeepDetector, FitData, Stage, adam
from aeguard.core.params import TRAINING_SPEC, Bool, Choice, Float, Int, Spec, Str
from aeguard.core.reference import ReferenceDraw, draw_reference
from aeguard.plugins.mss import MSSMixin
from aeguard.plugins.sae_ood.torch_model import FIRE_EPS, ClassProfiles, CodeKNN, SparseAutoencoder, topk_code

COMPONENTS = ("rec", "knn", "rare", "cap")
INPUT_MODES = ("tabular", "embedding")
SCALES = ("mad", "std")
KNN_METRICS = ("cosine", "euclidean")
#: Gao's Adam epsilon
ADAM_EPS = 6.25e-10
#: rows used for the geometric median of ``b_pre`` (Gao: ``stats_acts_sample[:32768]``)
GEOMEDIAN_ROWS = 32768
#: latents per class activation profile
CAP_SIZE = 16
#: ``1.4826 * MAD`` is the std of a normal sample
MAD_TO_STD = 1.4826

#: the spec's faithful setting (Denouden: std scaling)
FAITHFUL = {"scale": "std"}


def geometric_median(X: np.ndarray, iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """Weiszfeld's algorithm (as ``geom_median`` computes it), started at the coordinate mean, float64."""
    X = np.asarray(X, dtype=np.float64)
    m = X.mean(axis=0)
    for _ in range(iters):
        dist = np.linalg.norm(X - m, axis=1)
        w = 1.0 / np.maximum(dist, 1e-12)
        new = (w[:, None] * X).sum(axis=0) / w.sum()
        if np.linalg.norm(new - m) <= tol * max(1.0, np.linalg.norm(m)):
            return new
        m = new
    return m


@dataclass(frozen=True, kw_only=True)
class SizeRule(Int):
    """An int, or a rule relative to the input width d, so one benchmark spec string means the same ablation on
    every dataset: ``"d/8"`` (``k``: ``max(1, round(d / 8))``) or ``"16d"`` (``n_latents``: ``round(16 d)``)."""

    form: str = "d/N"  # "d/N" or "Nd"

    def kind(self) -> str:
        return f"{super().kind()} or a rule '{'d/8' if self.form == 'd/N' else '16d'}'"

    def _pattern(self) -> re.Pattern[str]:
        number = r"(\d+(?:\.\d+)?)"
        return re.compile(rf"^d\s*/\s*{number}$" if self.form == "d/N" else rf"^{number}\s*\*?\s*d$")

    def _from_text(self, name: str, text: str) -> Any:
        if self._pattern().match(text.strip()):
            return text.strip()
        return super()._from_text(name, text)

    def _check(self, name: str, value: Any) -> Any:
        if isinstance(value, str):
            match = self._pattern().match(value.strip())
            if not match or float(match.group(1)) <= 0:
                raise self.fail(name, value)
            return value
        return super()._check(name, value)


def resolve_size(value: int | str, d: int, form: str) -> int:
    """The int a :class:`SizeRule` value stands for at input width ``d``."""
    if not isinstance(value, str):
        return int(value)
    number = float(re.findall(r"\d+(?:\.\d+)?", value)[0])
    return max(1, round(d / number)) if form == "d/N" else max(1, round(number * d))


def parse_components(text: str) -> tuple[str, ...]:
    """``"rec+knn"`` -> ``("rec", "knn")``; unknown or repeated names refused naming ``score_components``."""
    parts = tuple(p.strip() for p in str(text).split("+") if p.strip())
    if not parts or any(p not in COMPONENTS for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"score_components must be '+'-joined names from {COMPONENTS} (e.g. 'rec+knn'), "
                         f"got {text!r}")
    return parts


def robust_scale(values: np.ndarray, kind: str) -> float:
    """``1.4826 * MAD`` (or std) of ``values``; zero or non-finite -> 1."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "std":
        s = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    else:
        s = MAD_TO_STD * float(np.median(np.abs(values - np.median(values))))
    return s if math.isfinite(s) and s > 0 else 1.0


def k_aux_rule(d: int, n_latents: int) -> int:
    """``min(2^round(log2(max(d/2, 1))), n_latents/2)``: Gao's "a power of two close to d_model/2"."""
    return int(max(1, min(2 ** round(math.log2(max(d / 2, 1))), n_latents // 2)))


class SAEOODDetector(MSSMixin, DeepDetector):
    """SAE-feature OOD (aeguard scoring): TopK SAE; score ``s_rec/scale + s_knn/scale`` by default.

    Parameters beyond the shared deep ones (see :class:`~aeguard.core.deep.DeepDetector`):

    - ``n_latents`` (None: 8 d), ``k`` (None: tabular ``max(1, round(d/4))``, embedding with d >= 512: 32;
      on tabular input a k above d/2 is clamped to ``floor(d/2)`` so TopK cannot learn the identity); both
      also take a rule relative to d (``k="d/8"``, ``n_latents="16d"``), so the spec's ablations are one
      benchmark spec each across datasets of different widths;
    - ``input_mode``: "tabular" (per-feature standardisation) or "embedding" (backbone features: no per-feature
      standardisation); ``layer_norm`` (None: on for embedding input only) is Gao's per-sample layer norm;
    - ``aux_coef`` (1/32; 0 turns AuxK off), ``k_aux`` (None: the power-of-two rule), ``dead_threshold`` in
      samples (None: ``min(10 N_train, 1e7)``);
    - ``k_schedule`` (Makhzani: k from ``min(4k, n)`` down to k over the first half of the steps),
      ``multi_topk`` (Gao: ``L(k) + L(4k)/8``), ``alpha`` (encode-time ``k' = round(alpha k)``);
    - ``score_components`` ("rec+knn"; any '+'-join of rec, knn, rare, cap; cap needs ``fit(X, classes=...)``),
      ``n_neighbors`` (K = 10), ``knn_metric`` ("euclidean", the default, an aeguard departure that keeps the
      code's magnitude; "cosine" is the spec's ``s_knn``),
      ``ref_cap`` (10,000 rows, and 32 MiB per constant), ``ref_trim`` (drop the top
      ``contamination`` share of training rows by ``s_rec`` from the reference; 0.1 when contamination is
      "auto"), ``scale`` ("mad" or "std"; ``faithful=True`` sets "std");
    - ``mss*``: mean-shift scoring of ``s_rec`` (off by default; ``aeguard.plugins.mss``).

    ``explain`` contributions sum to the score; see :meth:`SparseAutoencoder.score_against`.
    """

    faithful_settings = FAITHFUL
    #: training never reads these (the code head, reference set, scales and encode-time k are built after it), so
    #: with ``AEGUARD_TRAIN_CACHE`` their ablations reuse one trained SAE
    scoring_params: ClassVar[frozenset[str]] = frozenset({
        "score_components", "n_neighbors", "knn_metric", "ref_cap", "ref_trim", "scale", "alpha"})

    accepts_classes: ClassVar[bool] = True
    #: tables (backbone embeddings are tables too: ``input_mode="embedding"``) and raw-pixel images (spec section
    #: 7 (a): flattened, [0, 1] by the pixel range, standardised per channel in the graph; 1024 latents, k = 32)
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")

    param_spec: ClassVar[dict[str, Spec]] = {
        **TRAINING_SPEC,
        "lr": Float(low=0, low_open=True),
        "n_latents": SizeRule(low=2, none=True, none_means="8 d", form="Nd"),
        "k": SizeRule(low=1, none=True, none_means="the d/4 or 32 rule", form="d/N"),
        "input_mode": Choice(choices=INPUT_MODES),
        "layer_norm": Bool(none=True, none_means="on for embedding input"),
        "aux_coef": Float(low=0),
        "k_aux": Int(low=1, none=True, none_means="power of two near d/2"),
        "dead_threshold": Int(low=1, none=True, none_means="min(10 N_train, 1e7)"),
        "k_schedule": Bool(), "multi_topk": Bool(),
        "alpha": Float(low=1),
        "score_components": Str(),
        "n_neighbors": Int(low=1),
        "knn_metric": Choice(choices=KNN_METRICS),
        "ref_cap": Int(low=2, none=True, none_means="byte cap only"),
        "ref_trim": Bool(),
        "scale": Choice(choices=SCALES),
        "faithful": Bool(),
    }

    def __init__(self, n_latents: int | str | None = None, k: int | str | None = None, input_mode: str = "tabular",
                 layer_norm: bool | None = None, epochs: int = 100, lr: float = 1e-3,
                 batch_size: int | None = 256, aux_coef: float = 1 / 32, k_aux: int | None = None,
                 dead_threshold: int | None = None, k_schedule: bool = False, multi_topk: bool = False,
                 alpha: float = 1.0, score_components: str = "rec+knn", n_neighbors: int = 10,
                 knn_metric: str = "euclidean", ref_cap: int | None = 10000, ref_trim: bool = False, scale: str = "mad",
                 faithful: bool = False,
                 mss: bool = False, mss_k: int | None = None, mss_m: int = 1, mss_max_ref: int | None = 10000,
                 mss_cap_k: str = "same", val_fraction: float = 1 / 6, early_stopping: int | None = None,
                 epochs_per_step: int = 50, contamination: Any = 0.1, random_state: int | None = None,
                 device: str = "auto", verbose: bool = False) -> None:
        self.n_latents = n_latents
        self.k = k
        self.input_mode = input_mode
        self.layer_norm = layer_norm
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.aux_coef = aux_coef
        self.k_aux = k_aux
        self.dead_threshold = dead_threshold
        self.k_schedule = k_schedule
        self.multi_topk = multi_topk
        self.alpha = alpha
        self.score_components = score_components
        self.n_neighbors = n_neighbors
        self.knn_metric = knn_metric
        self.ref_cap = ref_cap
        self.ref_trim = ref_trim
        self.scale = scale
        self.faithful = faithful
        self.mss = mss
        self.mss_k = mss_k
        self.mss_m = mss_m
        self.mss_max_ref = mss_max_ref
        self.mss_cap_k = mss_cap_k
        self.val_fraction = val_fraction
        self.early_stopping = early_stopping
        self.epochs_per_step = epochs_per_step
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # --- settings --------------------------------------------------------------------------------------------
    def _use_layer_norm(self) -> bool:
        return (self.input_mode == "embedding") if self.layer_norm is None else bool(self.layer_norm)

    def _is_image(self) -> bool:
        """Fitted on (N, C, H, W) images (raw pixels, flattened by the base's per-channel standardisation)."""
        return len(getattr(self, "input_shape_", ())) == 3

    def _sizes(self, d: int) -> tuple[int, int]:
        """``(n_latents, k)`` from the spec's rules (section 2)."""
        pixels = self._is_image()
        n = resolve_size(self.n_latents, d, "Nd") if self.n_latents is not None else (1024 if pixels else 8 * d)
        if self.k is not None:
            k = resolve_size(self.k, d, "d/N")
        elif pixels or (self.input_mode == "embedding" and d >= 512):
            k = 32
        else:
            k = max(1, round(d / 4))
        if self.input_mode == "tabular" and not pixels:  # raw tabular only (spec section 2)
            k = min(k, max(1, d // 2))
        if k > n:
            raise ValueError(f"k must be <= n_latents ({n}), got k={k}")
        return n, k

    def _standardize_stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.input_mode == "embedding":  # commensurable features: no per-feature rescaling
            return np.zeros(X.shape[1]), np.ones(X.shape[1])
        return super()._standardize_stats(X)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, classes: np.ndarray | None = None) -> None:
        self.components_ = parse_components(self.score_components)
        if "cap" in self.components_ and classes is None:
            raise ValueError("score_components includes 'cap', which needs class labels: fit(X, classes=...)")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.input_mode == "embedding" and X.ndim == 4:
            raise ValueError("input_mode='embedding' is for backbone-feature tables; images are raw pixels "
                             "(leave input_mode='tabular')")
        super()._fit(X, y, classes=classes)

    # --- DeepDetector hooks ------------------------------------------------------------------------------------
    def prepare(self, data: FitData) -> None:
        """Geometric-median ``b_pre`` and the NMSE constant, both from (up to 32,768) normalised training rows."""
        d = data.n_features
        self.n_latents_, self.k_ = self._sizes(d)
        self.k_encode_ = int(min(self.n_latents_, max(self.k_, round(self.alpha * self.k_))))
        self.k_aux_ = int(self.k_aux) if self.k_aux is not None else k_aux_rule(d, self.n_latents_)
        self.k_aux_ = min(self.k_aux_, self.n_latents_)
        n_train = len(data.train_idx)
        self.dead_threshold_ = int(self.dead_threshold or min(10 * n_train, 10_000_000))
        sample = self._normalized(data.z_train[:GEOMEDIAN_ROWS])
        self.pre_bias_ = geometric_median(sample).astype(np.float32)
        self.mse_scale_ = float(((sample - sample.mean(axis=0)) ** 2).mean()) or 1.0

    def _normalized(self, z: np.ndarray) -> np.ndarray:
        from aeguard.plugins.sae_ood.torch_model import layer_norm

        if not self._use_layer_norm():
            return np.asarray(z, dtype=np.float64)
        return layer_norm(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()

    def build_model(self, data: FitData) -> nn.Module:
        model = SparseAutoencoder(data.n_features, self.n_latents_, self.k_, self.pre_bias_,
                                  layer_norm=self._use_layer_norm(), components=self.components_)
        self._rescale_encoder(model, data.seed)
        model.register_buffer("since_fired", torch.zeros(self.n_latents_, dtype=torch.long))
        model.register_buffer("rows_counted", torch.zeros((), dtype=torch.long))
        model.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        model.k_train = self.k_
        model.pending_fired = None
        return model

    @staticmethod
    def _rescale_encoder(model: SparseAutoencoder, seed: int) -> None:
        """Gao's ``init_from_data_``: scale W_enc so decoded random unit directions (+ b_pre) have unit mean norm."""
        g = torch.Generator().manual_seed(seed)
        enc = model.encoder
        with torch.no_grad():
            x = torch.randn(256, enc.weight.shape[1], generator=g)
            x = x / x.norm(dim=-1, keepdim=True) + enc.pre_bias
            code = topk_code(enc.pre_act(x), enc.k)[0]
            norm = (model.decode(code) - enc.pre_bias).norm(dim=-1).mean()
            if float(norm) > 0:
                enc.weight /= norm

    def _mse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2).mean()

    def _main_loss(self, model: SparseAutoencoder, x_n: torch.Tensor, pre: torch.Tensor, k: int) -> torch.Tensor:
        code = topk_code(pre, k)[0]
        return self._mse(model.decode(code), x_n) / self.mse_scale_

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """``NMSE(k) [+ NMSE(4k)/8] + aux_coef * AuxK``; leaves the fired mask for the after-step counters."""
        enc = model.encoder
        x_n = enc.normalize(z)
        pre = enc.pre_act(x_n)
        k = int(model.k_train)
        top = torch.topk(pre, k=k, dim=-1)
        vals = torch.relu(top.values)
        code = torch.zeros_like(pre).scatter(-1, top.indices, vals)
        recon = model.decode(code)
        loss = self._mse(recon, x_n) / self.mse_scale_
        if self.multi_topk:
            loss = loss + self._main_loss(model, x_n, pre, min(4 * k, self.n_latents_)) / 8
        fired = torch.zeros(self.n_latents_, dtype=torch.bool, device=pre.device)
        fired[top.indices[top.values > FIRE_EPS]] = True
        model.pending_fired = (fired.detach(), int(z.shape[0]))
        if self.aux_coef > 0:
            dead = (model.since_fired > self.dead_threshold_).to(pre.dtype)
            if bool(dead.any()):
                k_aux = min(self.k_aux_, int(dead.sum()))
                z_aux = topk_code(pre * dead, k_aux)[0]
                e = x_n - recon.detach()
                denom = self._mse(e.mean(dim=0, keepdim=True).expand_as(e), e)
                aux = torch.nan_to_num(self._mse(z_aux @ model.decoder.t(), e) / denom, nan=0.0)
                loss = loss + self.aux_coef * aux
        return loss

    def validation_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """Held-out NMSE at the encode-time k; touches no counter."""
        enc = model.encoder
        x_n = enc.normalize(z)
        return self._main_loss(model, x_n, enc.pre_act(x_n), self.k_)

    def _after_step(self, model: nn.Module) -> None:
        """Renormalise the decoder columns; update the dead-latent counters from the batch just stepped on."""
        model.normalize_decoder()
        fired, rows = model.pending_fired
        model.pending_fired = None
        model.since_fired += rows
        model.since_fired[fired] = 0
        model.rows_counted += rows
        model.steps_done += 1
        if self.k_schedule:
            model.k_train = self._scheduled_k(int(model.steps_done))

    def _scheduled_k(self, step: int) -> int:
        """Makhzani: linear from ``min(4k, n)`` to k over the first half of the steps."""
        start, end = min(4 * self.k_, self.n_latents_), self.k_
        half = max(1, self.total_steps_ // 2)
        frac = min(1.0, step / half)
        return int(round(start + (end - start) * frac))

    def _optimizer(self, parameters: list[nn.Parameter], stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
        return adam(parameters, lr=stage.lr, eps=ADAM_EPS), None

    def stages(self, model: nn.Module, data: FitData) -> list[Stage]:
        epochs = int(self.epochs)
        n_train = len(data.train_idx)
        batch = self.batch_size
        self.total_steps_ = epochs * (1 if not batch else math.ceil(n_train / batch))
        if self.k_schedule:
            model.k_train = self._scheduled_k(0)
        return [Stage(name="sae", loss=self.training_loss, val_loss=self.validation_loss, epochs=epochs,
                      batch_size=batch, lr=float(self._param("lr", 1e-3)), optimizer=self._optimizer,
                      patience=self.early_stopping, restore_best=False,
                      epochs_per_step=int(self.epochs_per_step),
                      after_backward=lambda m: m.project_decoder_grad(), after_step=self._after_step)]

    def fit_after_training(self, model: nn.Module, data: FitData) -> None:
        """Frequencies, NMSE denominator, reference codes (capped, optionally trimmed), class profiles, scales."""
        self.since_fired_ = model.since_fired.cpu().numpy().copy()
        self.rows_counted_ = int(model.rows_counted)
        self.n_dead_ = int((self.since_fired_ > self.dead_threshold_).sum())
        for name in ("since_fired", "rows_counted", "steps_done"):
            del model._buffers[name]  # training state, not graph constants
        model.pending_fired = None
        model.encoder.k = self.k_encode_
        model.components = ()  # scales are not known yet: components only
        z_train = torch.from_numpy(data.z_train)
        x_n, code, _, _ = model.encoder(z_train)
        x_n, code = x_n.numpy().astype(np.float64), code.numpy()
        n_train = len(code)
        freq = (code > 0).mean(axis=0)
        model.rarity.copy_(torch.as_tensor(-np.log(freq + 1.0 / n_train), dtype=torch.float32))
        model.no_fire_rarity.fill_(float(np.log(n_train)))
        model.rec_denom.fill_(float(((x_n - x_n.mean(axis=0)) ** 2).sum(axis=1).mean()) or 1.0)
        self.latent_frequency_ = freq
        # reference candidates: training rows, optionally without the top contamination share by s_rec
        candidates = np.arange(n_train)
        if self.ref_trim:
            s_rec = model.score_against(z_train, z_train)["s_rec"].numpy()
            share = 0.1 if self.contamination == "auto" else float(self.contamination)
            keep = int(round(n_train * (1 - share)))
            candidates = np.sort(np.argsort(s_rec, kind="stable")[:max(2, keep)])
        self.reference_: ReferenceDraw = draw_reference(len(candidates), self.n_latents_, cap_rows=self.ref_cap,
                                                        seed=data.seed)
        self.ref_train_rows_ = self.reference_.take(candidates)
        n_ref = self.reference_.n_ref
        self.n_neighbors_ = int(max(1, min(self.n_neighbors, n_ref - 1)))
        model.knn = CodeKNN(code[self.ref_train_rows_], self.n_neighbors_, metric=self.knn_metric)
        if data.classes is not None:
            c_train = data.classes_train
            means = np.stack([code[c_train == c].mean(axis=0) if np.any(c_train == c) else np.zeros(code.shape[1])
                              for c in range(data.n_classes)])
            model.profiles = ClassProfiles(means, CAP_SIZE)
        else:
            model.profiles = None
        # own reference position of every fit row (-1: not a reference row), for leave-self-out fit scores
        own = np.full(len(data.z), -1, dtype=np.int64)
        own[data.train_idx[self.ref_train_rows_]] = np.arange(n_ref)
        self._own_ref = own
        # component scales on the held-out rows (training rows, leaving themselves out, without a hold-out)
        if data.z_val is not None:
            comps = self._components_of(model, data.z_val, None)
        else:
            comps = self._components_of(model, data.z_train, own[data.train_idx])
        kind = self._param("scale", "mad")
        self.scales_ = {c: robust_scale(comps[f"s_{c}"], kind) for c in COMPONENTS if f"s_{c}" in comps}
        model.scales.copy_(torch.as_tensor([self.scales_.get(c, 1.0) for c in COMPONENTS], dtype=torch.float32))
        model.components = self.components_

    def _components_of(self, model: SparseAutoencoder, z: np.ndarray, own: np.ndarray | None,
                       target: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every output of the model for standardized rows ``z``; rows with ``own >= 0`` leave that reference
        code out of their kNN (``s_knn`` and the score are corrected accordingly)."""
        with torch.no_grad():
            zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
            tt = zt if target is None else torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
            out = {k: v.numpy() for k, v in model.score_against(zt, tt).items()}
            if own is not None and model.knn is not None and np.any(own >= 0):
                mine = np.flatnonzero(own >= 0)
                sims, nonzero = model.knn.similarities(torch.from_numpy(out["code"][mine]))
                sims[torch.arange(len(mine)), torch.from_numpy(own[mine])] = -torch.inf
                fixed = model.knn.distance(sims, nonzero).numpy()
                if "knn" in model.components:
                    delta = (fixed - out["s_knn"][mine]) / float(model.scales[1])
                    out["score"] = out["score"].copy()
                    out["score"][mine] += delta
                out["s_knn"] = out["s_knn"].copy()
                out["s_knn"][mine] = fixed
        return out

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        """Fit-set scores through the new-point path, reference rows leaving themselves out of the kNN."""
        z = self.standardize_(torch.from_numpy(X.astype(np.float32))).numpy()
        out = self._components_of(self.model_, z, self._own_ref, self._fit_targets)
        return out["score"].astype(np.float64)

    def manifest_extra(self) -> dict[str, Any]:
        return {**super().manifest_extra(), "sae": {
            "label": "SAE-feature OOD (aeguard scoring)", "n_latents": self.n_latents_, "k": self.k_,
            "k_encode": self.k_encode_, "k_aux": self.k_aux_, "dead_threshold": self.dead_threshold_,
            "n_dead": self.n_dead_, "layer_norm": self._use_layer_norm(), "input_mode": self.input_mode,
            "components": list(self.components_), "scales": self.scales_, "n_neighbors": self.n_neighbors_,
            "knn_metric": self.knn_metric,
            "mse_scale": self.mse_scale_, "ref_trim": bool(self.ref_trim),
            "fp32_modules": ["model.encoder (feeds TopK)", f"model.knn ({self.knn_metric} kNN)"]},
            "reference": self.reference_.manifest()}
