"""`cbnet`: a CBNet-style detector (Mahmud et al., arXiv 2403.07036; spec ``cbnet.md``, docs ``docs/cbnet.md``).

CBNet speeds up classification by a "converting" autoencoder g that maps hard inputs onto easy ones, followed by
a lightweight classifier f. aeguard keeps both parts and scores how cleanly an input converts:

    y = g(x);  s_conv = min_c ||y - r_c||^2;  s_ent = H(softmax(f(y)));  s_input = ||x - r_c*||^2
    score = s_conv / s1 + s_ent / s2 + s_input / s3          (c* = the prototype y is nearest to)

``s_input`` is aeguard design, not in the spec (whose score is ``components="conv+ent"``): g is trained to map a
whole class onto one row, so it learns to be invariant to where in its class a row lies; on tables without
cluster structure ("auto" finds one class) it is close to a constant map, and anomalies convert almost as cleanly
as normal rows (the collapse of spec section 9.4: on cardio and pima anomalies' median s_conv is only 1.4-2.3x
the normals'). What the converter discards is how far it had to move the row; ``s_input`` keeps that, as the
standardized input's distance to the prototype it is converted onto. Label-free, chosen on the five diagnosis
sets before the full suite was run (docs/cbnet.md, seed 0: s_input 0.83 mean ROC-AUC there, s_conv 0.78,
the sum of all three 0.84).

Fit, in order (``prepare`` then two training stages, as the spec orders them):

1. classes: the given ``classes`` or pseudo-classes from k-means on the standardized training rows (images: on
   their PCA-50 projection); ``n_classes``: an int (at most n_train / 10; clusters under 2 % of the rows, or 5
   rows, are merged into the nearest other one) or ``"auto"`` (default): the best silhouette over 2..10 on
   <= 5,000 rows, and one class when even that is below 0.25. aeguard design, against the spec's default 8:
   k-means through a unimodal blob puts class boundaries in its densest part, where g's conversion error and
   f's entropy peak, while far outliers sit deep inside one class and convert cleanly; measured on the
   contract table (tests/conftest.make_table, epochs=30), n_classes=8 gives ROC-AUC 0.28, "auto" (one class) 0.94.
   ``intra_class_clusters`` > 1 splits every class into k-means sub-classes (EncodeNet).
2. stage ``classify``: f on (rows, sub-classes), cross-entropy.
3. easy set per sub-class: entropy under f at or below the ``easy_percentile`` of the class (``faithful=True``:
   one fixed threshold ``easy_threshold``, a BranchyNet exit threshold); representative r_c: the medoid of the
   easy set (``representative="medoid"``, default) or the lowest-entropy row (``"lowest_entropy"``, the spec's
   default; ties, e.g. every row of a one-class fit at entropy 0, go to the medoid of the tied rows). aeguard
   design, against the spec's default: f's entropy falls as a row moves away from the class boundary, so the
   single lowest-entropy row is an extreme row, and on contaminated tables often an outlier (wbc, benchmark
   split, seeds 0/1: 3 of the 4 lowest-entropy prototypes are labelled outliers); g then maps the class onto
   an outlier. Measured on 5 ODDS sets x 2 seeds (docs/cbnet.md): mean ROC-AUC 0.735 -> 0.768.
4. stage ``convert``: g on all hard rows plus as many easy rows of the same class (cycling), target r_c, with f
   frozen (never retrained on converted inputs).
5. scales ``1.4826 * MAD`` (or std; zero -> 1) of s_conv, s_ent and s_input on the hold-out rows
   (``val_fraction``, 1/6) when there are any, else on the training rows; s_ent's scale is at least 1 % of its
   maximum ln K.

Outputs: ``score``, ``contrib`` (``(y - r_c*)_j^2 / s1 + (x - r_c*)_j^2 / s3`` plus ``s_ent / s2`` spread evenly
over the features, so they sum to the score), ``class`` (int64: the class code of the nearest prototype, i.e. the
given class code when classes were given, else the pseudo-class), ``s_conv``, ``s_ent`` and ``s_input`` (raw,
unscaled components; their scales are in the manifest).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.deep import DeepDetector, FitData, Stage
from aeguard.core.params import TRAINING_SPEC, Bool, Choice, Float, Int, Spec
from aeguard.core.validation import standard_scale
from aeguard.plugins.cbnet.torch_model import CBNet, NearestPrototype, entropy

#: silhouette search range and sample cap of n_classes="auto" (cbnet.md section 2)
AUTO_RANGE = (2, 10)
AUTO_ROWS = 5000
#: below this best silhouette ("no substantial structure", Kaufman & Rousseeuw) "auto" uses one class
SILHOUETTE_MIN = 0.25
#: s_ent's scale is at least this share of its maximum ln K: where f is fully confident on most hold-out rows the
#: MAD is ~0 (measured on wbc: 4e-8) and the few other rows' entropy noise would dominate the score
ENTROPY_FLOOR = 0.01
#: PCA components for the image pseudo-classes
IMAGE_PCA = 50
#: rows at most in the medoid search (pairwise distances)
MEDOID_ROWS = 2000
#: L1 activity penalty on g's bottleneck for images (the prototype's Keras activity_regularizer)
IMAGE_L1 = 1e-7
#: the score's components (``cbnet.md`` section 5 plus ``s_input``, aeguard design); the default first
COMPONENTS = ("conv+ent+input", "conv+ent", "conv+input", "ent+input", "conv", "ent", "input")
#: a k-means pseudo-class needs at least this share of the rows (and 5 rows); smaller clusters are merged
MIN_CLASS_SHARE = 0.02


def min_class_rows(n: int) -> int:
    return max(5, int(np.ceil(MIN_CLASS_SHARE * n)))


class ClassCount(Spec):
    """An int >= 2 or the word "auto"."""

    def kind(self) -> str:
        return "an int >= 2 or 'auto'"

    def parse(self, name: str, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text == "auto":
                return text
            try:
                value = int(text)
            except ValueError:
                raise self.fail(name, value) from None
        return self.check(name, value)

    def _check(self, name: str, value: Any) -> Any:
        if value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 2:
            raise self.fail(name, value)
        return value


def robust_scale(values: np.ndarray, kind: str, floor: float = 0.0) -> float:
    """``1.4826 * MAD`` (or the std) of a component on the scale rows, at least ``floor``; zero -> 1."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "mad":
        scale = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    else:
        scale = float(np.std(values))
    scale = max(scale, floor)
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def medoid(flat: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> int:
    """Row index (from ``pool``) with the least summed Euclidean distance to the other rows of ``pool`` (at most
    ``MEDOID_ROWS`` of them, drawn with ``rng``)."""
    if len(pool) == 1:
        return int(pool[0])
    pool = pool if len(pool) <= MEDOID_ROWS else np.sort(rng.choice(pool, MEDOID_ROWS, replace=False))
    e = flat[pool].astype(np.float64)
    d2 = np.maximum((e ** 2).sum(1)[:, None] - 2 * e @ e.T + (e ** 2).sum(1)[None, :], 0.0)
    return int(pool[int(np.argmin(np.sqrt(d2).sum(axis=1)))])


def kmeans_labels(z: np.ndarray, k: int, seed: int, min_rows: int = 1) -> np.ndarray:
    """k-means labels ``0..k'-1``; clusters of fewer than ``min_rows`` rows are merged into the nearest
    remaining centre (a few far rows forming a cluster of their own is how fit-set outliers would get a
    prototype of their own, the collapse risk of ``cbnet.md`` section 7)."""
    from sklearn.cluster import KMeans

    if k <= 1 or len(z) < 2:
        return np.zeros(len(z), dtype=np.int64)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)
    labels = km.labels_.astype(np.int64)
    sizes = np.bincount(labels, minlength=k)
    keep = np.flatnonzero(sizes >= min_rows)
    if len(keep) == 0:
        return np.zeros(len(z), dtype=np.int64)
    if len(keep) < k:
        centres = km.cluster_centers_[keep]
        d2 = ((z[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        labels = np.where(np.isin(labels, keep), labels, keep[np.argmin(d2, axis=1)])
    return np.searchsorted(keep, labels).astype(np.int64)


def auto_classes(z: np.ndarray, cap: int, seed: int) -> tuple[int, dict[str, float]]:
    """The k in 2..min(10, cap) with the best silhouette (k-means on <= 5,000 seeded rows); 1 when even the best
    silhouette is below ``SILHOUETTE_MIN``."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    sample = z if len(z) <= AUTO_ROWS else z[np.sort(rng.choice(len(z), AUTO_ROWS, replace=False))]
    found: dict[str, float] = {}
    for k in range(AUTO_RANGE[0], max(AUTO_RANGE[0], min(AUTO_RANGE[1], cap)) + 1):
        labels = kmeans_labels(sample, k, seed, min_class_rows(len(sample)))
        if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(sample):
            continue
        found[str(k)] = float(silhouette_score(sample, labels))
    if not found or max(found.values()) < SILHOUETTE_MIN:
        return 1, found  # no cluster structure: one class (boundaries through a blob invert the score)
    return int(max(found, key=lambda key: found[key])), found


class CBNetDetector(DeepDetector):
    """CBNet-style converting autoencoder + lightweight classifier (see the module docstring).

    ``epochs`` trains f; ``converter_epochs`` trains g (None: ``epochs`` for tables, ``round(0.4 * epochs)``
    for images, i.e. the spec's 50 and 20 at the default); each stage runs at least ``min_steps`` optimiser
    steps (None: 20 x ``epochs``). ``explain`` gives the contributions described above.
    """

    accepts_classes = True
    #: training never sees these (the training cache shares one training between them)
    scoring_params: ClassVar[frozenset[str]] = frozenset({"components", "scale"})
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")
    #: f is a conv branch on (C, H, W); g flattens itself
    image_layout: ClassVar[str] = "chw"
    param_spec: ClassVar[dict[str, Spec]] = {
        **TRAINING_SPEC, "n_classes": ClassCount(), "converter_epochs": Int(low=1, none=True, none_means="derived"),
        "min_steps": Int(low=1, none=True, none_means="20 x epochs"),
        "intra_class_clusters": Int(low=1), "easy_percentile": Float(low=0, high=100, low_open=True),
        "easy_threshold": Float(low=0, low_open=True), "faithful": Bool(),
        "representative": Choice(choices=("lowest_entropy", "medoid")), "components": Choice(choices=COMPONENTS),
        "scale": Choice(choices=("mad", "std")),
    }

    def __init__(self, n_classes: int | str = "auto", use_classes: bool = True, epochs: int = 50,
                 converter_epochs: int | None = None,
                 lr: float = 1e-3, batch_size: int | None = 256, min_steps: int | None = None,
                 intra_class_clusters: int = 1, easy_percentile: float = 20.0, easy_threshold: float = 0.05,
                 faithful: bool = False,
                 representative: str = "medoid", components: str = "conv+ent+input", scale: str = "mad",
                 val_fraction: float = 1 / 6, epochs_per_step: int = 50, contamination: Any = 0.1,
                 random_state: int | None = None, device: str = "auto", verbose: bool = False) -> None:
        self.n_classes = n_classes
        self.use_classes = use_classes
        self.epochs = epochs
        self.converter_epochs = converter_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.min_steps = min_steps
        self.intra_class_clusters = intra_class_clusters
        self.easy_percentile = easy_percentile
        self.easy_threshold = easy_threshold
        self.faithful = faithful
        self.representative = representative
        self.components = components
        self.scale = scale
        self.val_fraction = val_fraction
        self.epochs_per_step = epochs_per_step
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X: Any, y: Any = None, classes: Any = None, pixel_range: Any = None) -> CBNetDetector:
        """``use_classes=False`` drops given ``classes`` and fits k-means pseudo-classes instead, so labels vs
        pseudo-classes (``cbnet.md`` section 9.2) is one spec string on a suite that passes labels
        (``--suite digits-holdout``)."""
        keep = classes if self.use_classes is not False else None
        return super().fit(X, y, classes=keep, pixel_range=pixel_range)  # type: ignore[return-value]

    def _standardize_stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return standard_scale(X)  # constant columns get a scale floor (aeguard.core.validation)

    # --- classes ----------------------------------------------------------------------------------
    def prepare(self, data: FitData) -> None:
        """Training classes (given or k-means) and their sub-classes; the model gets one output per sub-class."""
        flat = data.z_train.reshape(len(data.train_idx), -1)
        n_train = len(flat)
        info: dict[str, Any] = {}
        if data.classes is not None:
            base, n_base = data.classes_train.astype(np.int64), int(data.n_classes)
            info["source"] = "given"
        else:
            feats = flat
            if len(data.input_shape) == 3 and flat.shape[1] > IMAGE_PCA and n_train > IMAGE_PCA:
                from sklearn.decomposition import PCA

                feats = PCA(n_components=IMAGE_PCA, random_state=data.seed).fit_transform(flat)
                info["pca_components"] = IMAGE_PCA
            cap = max(2, n_train // 10)
            if self.n_classes == "auto":
                n_base, info["silhouette"] = auto_classes(feats, cap, data.seed)
            else:
                n_base = min(int(self.n_classes), cap)
            n_base = max(1, min(n_base, len(np.unique(feats, axis=0))))
            base = kmeans_labels(feats, n_base, data.seed, min_class_rows(n_train))
            n_base = int(base.max()) + 1
            info["source"] = "k-means"
        m = int(self.intra_class_clusters)
        sub = base.copy()
        sub_class = np.arange(n_base, dtype=np.int64)
        if m > 1:
            owners: list[int] = []
            sub = np.empty_like(base)
            for c in range(n_base):
                rows = np.flatnonzero(base == c)
                labels = np.zeros(len(rows), dtype=np.int64)
                if len(rows):
                    k = max(1, min(m, len(rows) // 10, len(np.unique(flat[rows], axis=0))))
                    labels = kmeans_labels(flat[rows], k, data.seed + c, min_class_rows(len(rows)))
                k = int(labels.max()) + 1 if len(rows) else 1
                sub[rows] = len(owners) + labels
                owners += [c] * k
            sub_class = np.asarray(owners, dtype=np.int64)
        self.train_classes_ = sub
        #: class code of each sub-class (the code f's output j stands for)
        self.sub_class_ = sub_class
        self.classes_info_ = {**info, "n_classes": int(n_base), "n_outputs": int(len(sub_class)),
                              "intra_class_clusters": m}

    def build_model(self, data: FitData) -> nn.Module:
        mean = scale = None
        if len(data.input_shape) == 3:
            c, h, w = data.input_shape
            per = lambda v: np.repeat(np.asarray(v, np.float32).reshape(c), h * w)  # noqa: E731
            mean, scale = per(self.standardize_.mean.numpy()), per(self.standardize_.scale.numpy())
        return CBNet(data.input_shape, len(self.sub_class_), mean, scale)

    # --- training ---------------------------------------------------------------------------------
    def _converter_epochs(self, data: FitData) -> int:
        if self.converter_epochs is not None:
            return int(self.converter_epochs)
        return int(self.epochs) if len(data.input_shape) == 1 else max(1, round(0.4 * int(self.epochs)))

    def _stage_epochs(self, epochs: int, n_rows: int) -> int:
        """``epochs``, raised so the stage runs at least ``min_steps`` optimiser steps (None: 20 x ``epochs``).

        The spec's 50 epochs of 256-row batches are ~12k steps on a 60k-row image set but a few dozen on a
        400-row table, which leaves g a constant map (measured: every row converted to one point)."""
        batches = 1 if not self.batch_size else max(1, -(-n_rows // int(self.batch_size)))
        min_steps = 20 * int(self.epochs) if self.min_steps is None else int(self.min_steps)
        return max(int(epochs), -(-min_steps // batches))

    def stages(self, model: nn.Module, data: FitData) -> list[Stage]:
        def classify(m: CBNet, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(m.classify(z), c)

        image = len(data.input_shape) == 3

        def convert(m: CBNet, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            out, code = m.pre_output(z)
            if image:  # BCE on [0, 1] pixels + L1 activity on the bottleneck (the prototype's settings)
                r01 = (r * m.pixel_scale + m.pixel_mean).clamp(0.0, 1.0)
                bce = nn.functional.binary_cross_entropy_with_logits(out, r01)
                return bce + IMAGE_L1 * code.abs().sum(dim=1).mean()
            return ((out - r) ** 2).sum(dim=1).mean()

        common = dict(lr=float(self.lr), batch_size=self.batch_size, epochs_per_step=int(self.epochs_per_step))
        return [
            Stage(name="classify", loss=classify, parameters=lambda m: m.classifier.parameters(),
                  tensors=lambda d: (d.z_train, self.train_classes_),
                  epochs=self._stage_epochs(int(self.epochs), len(data.train_idx)), **common),
            # tensors run when the stage starts, after f is trained: easy sets, prototypes, pairs
            Stage(name="convert", loss=convert, parameters=lambda m: m.converter_parameters(),
                  tensors=lambda d: self._conversion_pairs(model, d), **common,
                  # the pairs are about twice the hard rows: sized on the training rows
                  epochs=self._stage_epochs(self._converter_epochs(data), len(data.train_idx))),
        ]

    def _train(self, model: nn.Module, data: FitData) -> dict[str, Any]:
        """As the base; weights loaded from the training cache skip the stages, so the easy sets (fit state
        reported in the manifest) are recomputed from the loaded f, which gives the cached prototypes again."""
        history = super()._train(model, data)
        if history.get("cache") == "hit":
            self._conversion_pairs(model, data)
        return history

    def _entropies(self, model: CBNet, z: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        out = []
        with torch.no_grad():
            for start in range(0, len(z), 4096):
                zb = torch.from_numpy(np.ascontiguousarray(z[start:start + 4096])).to(device)
                out.append(entropy(model.classify(zb)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _conversion_pairs(self, model: CBNet, data: FitData) -> tuple[np.ndarray, np.ndarray]:
        """Easy sets, representatives (put into the model as prototypes) and the balanced (row, target) pairs."""
        z = data.z_train
        flat = z.reshape(len(z), -1)
        H = self._entropies(model, z)
        rng = np.random.default_rng(data.seed)
        rows_out, targets, protos, owners, per_class = [], [], [], [], []
        for j in range(len(self.sub_class_)):
            rows = np.flatnonzero(self.train_classes_ == j)
            if not len(rows):
                continue  # a class with no training rows has no prototype
            h = H[rows]
            if self.faithful:
                easy_mask = h < float(self.easy_threshold)
            else:
                easy_mask = h <= np.percentile(h, float(self.easy_percentile))
            if not easy_mask.any():  # a fixed threshold no row meets: the lowest-entropy row alone
                easy_mask = h == h.min()
            easy, hard = rows[easy_mask], rows[~easy_mask]
            if self.representative == "medoid":
                rep = medoid(flat, easy, rng)
            else:  # ties (one class: H = 0 on every row) broken by the medoid of the tied rows, not row order
                rep = medoid(flat, rows[h <= h.min()], rng)
            pairs = np.concatenate([hard, np.resize(easy, len(hard))]) if len(hard) else easy
            rows_out.append(pairs)
            targets.append(np.full(len(pairs), len(protos)))
            protos.append(flat[rep])
            owners.append(self.sub_class_[j])
            per_class.append({"output": j, "class": int(self.sub_class_[j]), "n_rows": int(len(rows)),
                              "n_easy": int(len(easy)), "n_hard": int(len(hard)), "representative_row": int(rep)})
        prototypes = np.stack(protos).astype(np.float32)
        model.nearest = NearestPrototype(prototypes, np.asarray(owners, dtype=np.int64))
        self.easy_sets_ = per_class
        idx = np.concatenate(rows_out)
        return z[idx], prototypes[np.concatenate(targets)]

    # --- after training ---------------------------------------------------------------------------
    def fit_after_training(self, model: nn.Module, data: FitData) -> None:
        """Component scales on the hold-out rows (else the training rows) and the component weights."""
        rows = data.z_val if data.z_val is not None else data.z_train
        model.scales.fill_(1.0)
        out = model.score_against(torch.from_numpy(rows), torch.from_numpy(rows))
        ent_floor = float(ENTROPY_FLOOR * np.log(len(self.sub_class_)))
        scales = [robust_scale(out["s_conv"].numpy(), self.scale),
                  robust_scale(out["s_ent"].numpy(), self.scale, ent_floor),
                  robust_scale(out["s_input"].numpy(), self.scale)]
        model.scales.copy_(torch.tensor(scales, dtype=torch.float32))
        used = self.components.split("+")
        weights = [float(name in used) for name in ("conv", "ent", "input")]
        model.weights.copy_(torch.tensor(weights, dtype=torch.float32))
        self.component_scales_ = {"s_conv": scales[0], "s_ent": scales[1], "s_input": scales[2], "kind": self.scale,
                                  "measured_on": "hold-out" if data.z_val is not None else "training rows",
                                  "n_rows": int(len(rows))}

    def manifest_extra(self) -> dict[str, Any]:
        return {**super().manifest_extra(), "classes": dict(self.classes_info_), "easy_sets": list(self.easy_sets_),
                "component_scales": dict(self.component_scales_), "components": self.components,
                "easy_rule": (f"fixed entropy threshold {self.easy_threshold}" if self.faithful
                              else f"{self.easy_percentile}th percentile of the entropy per class"),
                "representative": self.representative}

