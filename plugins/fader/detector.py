"""`fader`: FADeR-style inpainting with feature attenuation (spec ``fader.md``; docs ``docs/fader.md``).

Park, Kang, Kim, Kim and Yi, "Feature Attenuation of Defective Representation Can Resolve Incomplete Masking on
Anomaly Detection" (arXiv 2407.04597), on EAR (arXiv 2310.04010). No code is public and the paper's internals
are not in the public material: the mechanism here is aeguard design ("FADeR-style"), consistent with the
abstract (one deterministic mask, two MLP layers attenuating features during decoding, edge use).

Fit, in order:

1. ``prepare``: the mask rule's statistics and the hint constants. Tables: G = min(d, ``n_groups``=8) feature
   groups (average-linkage clustering on 1 - |corr|, or contiguous blocks), per-feature median and
   ``1.4826 MAD`` (a zero MAD becomes 1, the component-scale rule of the spec conventions: on a binary column
   a zero MAD would make every non-median value 1e5 times suspicious), quartile edges and bin medians.
   Images: the mean normal image in [0, 1] pixels.
2. stage ``inpaint`` (A): the U-Net learns to inpaint: per row the deterministic rule mask with probability 0.5,
   else a random mask of the same size; loss ``||x - R(x~)||^2`` (sum over features, mean over rows).
3. stage ``attenuate`` (B, round 0): with the stage-A weights frozen (only the FADeR MLP trains), targets
   ``t_p = clip((e_p - med_p) / (q99_p - med_p), 0, 1)`` from the frozen base's per-group/patch errors under the
   rule mask (med, q99 per group/patch over the training rows; training-only, not in the artifact);
   corruptions with probability ``corruption_prob`` (ceil(qP) groups copied from another row / patches pasted
   from another image at a shifted place, ``t_p = 1`` there, the clean x stays the target); loss
   ``BCE(s, t) + lam * mean((x - x^_FADeR)^2)`` (the reconstruction term is a per-element mean so that it weighs
   like the per-group BCE; aeguard). ``recon_on="corrupted"`` (default, aeguard) takes the reconstruction term on
   the corrupted rows only, where the clean original is known; ``"all"`` is the spec's literal reading. Why: the
   fit set is contaminated, and on a real outlier "the clean x" *is* the outlier, so the term teaches the gates to
   stay open exactly where they should close (measured on wbc and cardio, seed 0, 1,000 / 200 epochs: with the
   term on every row the soft score's ROC-AUC was 0.59 / 0.81 and the outliers' mean s was at or below the
   inliers'; without it 0.88 / 0.94, see docs/fader.md). Restricting it to the corrupted rows was not enough
   (0.73 / 0.69 at the default epochs), so the default is ``lam = 0`` (ROC-AUC base -> FADeR-style, seed 0:
   wbc 0.923 -> 0.940, cardio 0.825 -> 0.883, glass 0.677 -> 0.698): the MLP learns from the BCE targets alone,
   and the corruptions' ``t_p = 1`` already says "attenuate here" (aeguard, against the spec's lambda = 1).
4. stages ``active-r`` (r = 1 .. ``active_rounds``): re-score the training rows with the current FADeR model,
   set ``t_p = 1`` for the top ``active_top_frac`` of all (row, group/patch) errors, retrain the MLP (warm start).
   A label-free self-training reading of the paper's "active-learning strategy" (aeguard).

Scoring: one graph, one pass (``torch_model.py``). ``attenuation=False`` scores with the stage-A base (spec
section 9.1), ``skip_levels_at_inference="deep"`` turns the shallowest skip off (EAR; ``faithful=True``),
``mask_rule="random"`` swaps the suspicion ranking for a fixed random projection (9.3), ``n_masks > 1`` is the
RIAD-style multi-mask baseline (9.4), ``active_rounds``, ``corruption_prob`` and ``gate`` are the 9.5 ablations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aeguard.core.deep import DeepDetector, FitData, Stage
from aeguard.core.params import TRAINING_SPEC, Bool, Choice, Float, Int, Spec
from aeguard.plugins.fader.torch_model import MAD_FACTOR, FaderNet, ImageFader, TabularFader, random_mask

#: EAR's inference setting (shallow skips off, from the EAR abstracts); nothing else of FADeR is public
FAITHFUL = {"skip_levels_at_inference": "deep"}
#: rows per chunk when the training set is re-scored for targets
CHUNK = 2048


def feature_groups(z: np.ndarray, n_groups: int, how: str) -> np.ndarray:
    """Group label (0 .. G-1) per feature: one group per feature when G >= d; else average-linkage clustering on
    ``1 - |corr|`` of the standardized fit features (``how="correlation"``) or contiguous blocks."""
    d = z.shape[1]
    if n_groups >= d:
        return np.arange(d)
    contiguous = np.minimum(np.arange(d) * n_groups // d, n_groups - 1)
    if how == "contiguous" or len(z) < 3:
        return contiguous
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(np.asarray(z, dtype=np.float64), rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)  # a constant column correlates with nothing
    dist = np.clip(1.0 - np.abs(corr), 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform((dist + dist.T) / 2, checks=False), method="average"), n_groups,
                      criterion="maxclust")
    _, first = np.unique(labels, return_index=True)
    order = {lab: i for i, lab in enumerate(labels[np.sort(first)])}  # numbered by their first feature
    return np.asarray([order[lab] for lab in labels])


def quartile_hint(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature the quartile edges (d x 3) and the median of the training values in each of the four bins
    ``[-inf, e1), [e1, e2), [e2, e3), [e3, inf)`` (d x 4); an empty bin (discrete data) gets its lower edge."""
    z = np.asarray(z, dtype=np.float64)
    edges = np.quantile(z, [0.25, 0.5, 0.75], axis=0).T
    centres = np.empty((z.shape[1], 4))
    for j in range(z.shape[1]):
        index = (z[:, j:j + 1] >= edges[j][None, :]).sum(axis=1)
        for b in range(4):
            values = z[index == b, j]
            centres[j, b] = np.median(values) if len(values) else edges[j, max(0, b - 1)]
    return edges, centres


class FaderDetector(DeepDetector):
    """FADeR-style inpainting autoencoder with feature attenuation, tables and images (see the module docstring).

    Parameters beyond the shared deep ones: ``mask_ratio`` q (0.25), ``n_groups`` (8; tables), ``grouping``
    (``correlation`` | ``contiguous``), ``patch_size`` (None: 2 below 16 px, else 4; images), ``width`` (32; the
    first level's channels, images), ``mask_rule`` (``deterministic`` | ``random``), ``n_masks`` (1; K > 1:
    RIAD-style multi-mask, at most one mask per group/patch),
    ``attenuation`` (True; False: the stage-A base), ``gate`` (``unit`` | ``scalar``),
    ``skip_levels_at_inference`` (``all`` | ``deep``), ``active_rounds`` (2), ``active_top_frac`` (0.05),
    ``corruption_prob`` (0.5), ``lam`` (0; the spec's 1 is ``lam=1, recon_on="all"``), ``recon_on``
    (``corrupted`` | ``all``), ``min_steps`` (None: 20 x epochs per stage), ``epochs`` (stage A, 100),
    ``epochs_b`` (per stage-B round, 20),
    ``batch_size`` (None: 256 for tables, 64 for images), ``image_score`` (``max`` of the blurred error map |
    ``top1``: mean of its top 1 % | ``sum``: the whole error, for whole-image changes), ``blur_sigma`` (None: 1 px
    from 16 px up, 0.5 px below), ``faithful``.

    ``explain``: per-feature (per-pixel) squared errors A_j; for tables they sum to the score, for images to the
    ``error_sum`` component (the image score is the maximum of the blurred map). Components: ``masked_error``
    (the sum of A over the masked features), ``mask`` and ``soft_scores`` (B x P).
    """

    faithful_settings = FAITHFUL
    #: 3: the optimiser-step floor applies to images too (cached image trainings from before are not reused)
    training_version: ClassVar[int] = 3
    #: what only the scoring graph reads (the training cache reuses one training for these ablations)
    scoring_params: ClassVar[frozenset[str]] = frozenset({"skip_levels_at_inference", "image_score", "blur_sigma"})
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")
    #: the conv U-Net takes (C, H, W); tables stay rows
    image_layout: ClassVar[str] = "chw"
    param_spec: ClassVar[dict[str, Spec]] = {
        **TRAINING_SPEC,
        "batch_size": Int(low=1, none=True, none_means="256 for tables, 64 for images"),
        "mask_ratio": Float(low=0, high=1, low_open=True),
        "n_groups": Int(low=1), "grouping": Choice(choices=("correlation", "contiguous")),
        "patch_size": Int(low=2, high=8, none=True, none_means="2 below 16 px, else 4"),
        "width": Int(low=1), "mask_rule": Choice(choices=("deterministic", "random")), "n_masks": Int(low=1),
        "attenuation": Bool(), "gate": Choice(choices=("unit", "scalar")),
        "skip_levels_at_inference": Choice(choices=("all", "deep")), "active_rounds": Int(low=0),
        "active_top_frac": Float(low=0, high=1, low_open=True), "corruption_prob": Float(low=0, high=1),
        "lam": Float(low=0), "epochs_b": Int(low=1), "image_score": Choice(choices=("max", "top1", "sum")),
        "blur_sigma": Float(low=0, low_open=True, none=True, none_means="1 px from 16 px up, else 0.5"),
        "faithful": Bool(), "recon_on": Choice(choices=("corrupted", "all")),
        "min_steps": Int(low=1, none=True, none_means="20 x epochs per stage"),
    }

    def __init__(self, mask_ratio: float = 0.25, n_groups: int = 8, grouping: str = "correlation",
                 patch_size: int | None = None, width: int = 32, mask_rule: str = "deterministic",
                 n_masks: int = 1, attenuation: bool = True, gate: str = "unit",
                 skip_levels_at_inference: str = "all", active_rounds: int = 2, active_top_frac: float = 0.05,
                 corruption_prob: float = 0.5, lam: float = 0.0, recon_on: str = "corrupted",
                 min_steps: int | None = None, image_score: str = "max",
                 blur_sigma: float | None = None, faithful: bool = False, epochs: int = 100, epochs_b: int = 20,
                 lr: float = 1e-3, batch_size: int | None = None, epochs_per_step: int = 50,
                 contamination: Any = 0.1, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        self.mask_ratio = mask_ratio
        self.n_groups = n_groups
        self.grouping = grouping
        self.patch_size = patch_size
        self.width = width
        self.mask_rule = mask_rule
        self.n_masks = n_masks
        self.attenuation = attenuation
        self.gate = gate
        self.skip_levels_at_inference = skip_levels_at_inference
        self.active_rounds = active_rounds
        self.active_top_frac = active_top_frac
        self.corruption_prob = corruption_prob
        self.lam = lam
        self.recon_on = recon_on
        self.min_steps = min_steps
        self.image_score = image_score
        self.blur_sigma = blur_sigma
        self.faithful = faithful
        self.epochs = epochs
        self.epochs_b = epochs_b
        self.lr = lr
        self.batch_size = batch_size
        self.epochs_per_step = epochs_per_step
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # --- settings ------------------------------------------------------------------------------------
    def _image(self, data: FitData) -> bool:
        return len(data.input_shape) == 3

    def _batch(self, data: FitData) -> int:
        return int(self.batch_size) if self.batch_size is not None else (64 if self._image(data) else 256)

    # --- DeepDetector hooks --------------------------------------------------------------------------
    def prepare(self, data: FitData) -> None:
        """Mask-rule statistics and hint constants from the training rows (see the module docstring)."""
        z = data.z_train
        self.active_info_: list[dict[str, Any]] = []
        if self._image(data):
            c, h, w = data.input_shape
            patch = self.patch_size or (2 if min(h, w) < 16 else 4)
            mean = self.standardize_.mean.numpy().reshape(c, 1, 1).astype(np.float64)
            scale = self.standardize_.scale.numpy().reshape(c, 1, 1).astype(np.float64)
            self.mean_image_ = (z.astype(np.float64) * scale + mean).mean(axis=0)
            self.patch_ = int(patch)
            self.n_units_ = (h // patch) * (w // patch) if h % patch == 0 and w % patch == 0 else 0
            return
        d = z.shape[1]
        labels = feature_groups(z, min(int(self.n_groups), d), self.grouping)
        self.groups_ = labels
        self.n_units_ = int(labels.max()) + 1
        med = np.median(z.astype(np.float64), axis=0)
        mad = MAD_FACTOR * np.median(np.abs(z - med), axis=0)
        self.median_ = med
        self.mad_scale_ = np.where(mad > 0, mad, 1.0) + 1e-5
        self.edges_, self.centres_ = quartile_hint(z)

    def build_model(self, data: FitData) -> nn.Module:
        # more disjoint masks than groups/patches cannot exist (http, smtp: 3 features): one unit per mask
        self.n_masks_ = int(min(int(self.n_masks), max(1, self.n_units_)))
        common = dict(mask_ratio=float(self.mask_ratio), mask_rule=self.mask_rule, n_masks=self.n_masks_,
                      gate=self.gate, seed=int(data.seed))
        if self._image(data):
            c, h, w = data.input_shape
            sigma = self.blur_sigma if self.blur_sigma is not None else (1.0 if min(h, w) >= 16 else 0.5)
            return ImageFader((c, h, w), self.standardize_.mean.numpy(), self.standardize_.scale.numpy(),
                              self.mean_image_, patch=self.patch_, width=int(self.width), blur_sigma=float(sigma),
                              score=self.image_score, **common)
        d = data.n_features
        groups = np.zeros((d, self.n_units_), dtype=np.float32)
        groups[np.arange(d), self.groups_] = 1.0
        return TabularFader(d, groups, self.median_, self.mad_scale_, self.edges_, self.centres_, **common)

    def _stage_epochs(self, epochs: int, data: FitData) -> int:
        """``epochs``, raised so the stage runs at least ``min_steps`` optimiser steps (None: 20 x ``epochs``).
        100 epochs of 256-row batches are ~8k steps on a 20k-row table but 100 on wbc's 227 training rows, where
        the FADeR MLP stayed near its initial s = 0.5 (measured: mean s 0.40 on inliers, gates almost never below
        0.5); the same held for images: 20 epochs of 64-image batches are 40 steps on a digit's 108 fit images,
        and the soft scores came out flat (mean 0.23-0.25 on normal and anomalous digits alike, ROC-AUC of
        max_p s_p 0.40-0.55, no gate below 0.5; ``docs/fader.md``). aeguard, as ``cbnet``'s ``min_steps``."""
        batches = max(1, -(-len(data.train_idx) // self._batch(data)))
        floor = 20 * int(epochs) if self.min_steps is None else int(self.min_steps)
        return max(int(epochs), -(-floor // batches))

    def stages(self, model: nn.Module, data: FitData) -> list[Stage]:
        common = dict(lr=float(self.lr), batch_size=self._batch(data), epochs_per_step=int(self.epochs_per_step))
        stages = [Stage(name="inpaint", loss=self._inpaint_loss, parameters=lambda m: m.base_parameters(),
                        epochs=self._stage_epochs(int(self.epochs), data), **common)]
        if not self.attenuation:
            return stages
        for r in range(int(self.active_rounds) + 1):
            stages.append(Stage(name="attenuate" if r == 0 else f"active-{r}", loss=self._attenuate_loss,
                                parameters=lambda m: m.fader.parameters(),
                                tensors=lambda d, r=r: self._targets(model, d, r),
                                epochs=self._stage_epochs(int(self.epochs_b), data),
                                **common))
        return stages

    def fit_after_training(self, model: nn.Module, data: FitData) -> None:
        """The inference switches: FADeR gates on (unless the base is asked for), shallow skip as configured."""
        model.set_inference(attenuate=bool(self.attenuation),
                            drop_shallow=self._param("skip_levels_at_inference", "all") == "deep")

    # --- losses --------------------------------------------------------------------------------------
    def _inpaint_loss(self, model: FaderNet, z: torch.Tensor) -> torch.Tensor:
        """Stage A: rule mask or a random mask of the same size (p = 0.5 each), all skips on, no gates."""
        x = model.unit(z)
        rule = model.rule_mask(x)
        rand = random_mask(x.shape[0], model.n_units, model.k, x.device)
        pick = (torch.rand(x.shape[0], 1, device=x.device) < 0.5).to(x.dtype)
        xhat, _ = model.train_pass(x, pick * rule + (1.0 - pick) * rand, gated=False)
        return ((xhat - x) ** 2).flatten(1).sum(dim=1).mean()

    def _corrupt(self, model: FaderNet, x: torch.Tensor, t: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ceil(qP) random groups/patches of a share ``corruption_prob`` of the rows replaced by another row's
        (images: another image's content at a patch-aligned shift, CutPaste-like); their targets become 1."""
        p = float(self.corruption_prob)
        if p <= 0 or x.shape[0] < 2:
            return x, t, torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        B = x.shape[0]
        chosen = (torch.rand(B, 1, device=x.device) < p).to(x.dtype)
        mc = random_mask(B, model.n_units, model.k, x.device) * chosen
        other = x[torch.randperm(B, device=x.device)]
        if isinstance(model, ImageFader):
            gh, gw = model.grid
            dy, dx = (int(v) for v in torch.randint(0, max(gh, gw), (2,)))
            other = torch.roll(other, shifts=((dy % gh) * model.patch, (dx % gw) * model.patch), dims=(2, 3))
        up = model.up(mc)
        return (1.0 - up) * x + up * other, torch.maximum(t, mc), chosen

    def _attenuate_loss(self, model: FaderNet, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Stage B: ``BCE(s, t) + lam * mean((x - x^_FADeR)^2)`` on (possibly corrupted) rows, clean x as target."""
        x = model.unit(z)
        xc, tc, chosen = self._corrupt(model, x, t)
        xhat, logits = model.train_pass(xc, model.rule_mask(xc), gated=True)
        bce = F.binary_cross_entropy_with_logits(logits, tc)
        per_row = ((xhat - x) ** 2).flatten(1).mean(dim=1)
        if self.recon_on == "all":
            recon = per_row.mean()
        else:  # only rows whose clean original differs from what the net saw (see the module docstring)
            weight = chosen.reshape(-1)
            recon = (per_row * weight).sum() / weight.sum().clamp(min=1.0)
        return bce + float(self.lam) * recon

    # --- targets -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _unit_errors(self, model: FaderNet, z: np.ndarray, gated: bool) -> np.ndarray:
        """Per-row, per-group/patch mean squared error under the rule mask, all skips on (B x P)."""
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(z), CHUNK):
            x = model.unit(torch.from_numpy(np.ascontiguousarray(z[start:start + CHUNK])).to(device))
            xhat, _ = model.train_pass(x, model.rule_mask(x), gated=gated)
            out.append(model.unit_errors((x - xhat) ** 2).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _targets(self, model: FaderNet, data: FitData, round_: int) -> tuple[np.ndarray, np.ndarray]:
        """Round 0: attribution matrices (tables) and the robust-normalised errors of the frozen base; round r:
        those targets with the top ``active_top_frac`` of the current FADeR model's errors set to 1."""
        z = data.z_train
        if round_ == 0:
            if isinstance(model, TabularFader):
                model.set_attribution()
            e = self._unit_errors(model, z, gated=False)
            med, q99 = np.median(e, axis=0), np.quantile(e, 0.99, axis=0)
            span = np.where(q99 - med > 1e-12, q99 - med, 1.0)
            self._base_targets = np.clip((e - med) / span, 0.0, 1.0).astype(np.float32)
            targets = self._base_targets
            self.active_info_.append({"round": 0, "mean_target": round(float(targets.mean()), 4)})
        else:
            e = self._unit_errors(model, z, gated=True)
            cut = np.quantile(e, 1.0 - float(self.active_top_frac))
            top = e >= cut
            targets = np.maximum(self._base_targets, top.astype(np.float32))
            self.active_info_.append({"round": round_, "n_top": int(top.sum()),
                                      "mean_target": round(float(targets.mean()), 4)})
        return z, targets

    # --- manifest ------------------------------------------------------------------------------------
    def manifest_extra(self) -> dict[str, Any]:
        model = getattr(self, "model_", None)
        block: dict[str, Any] = {"name": "FADeR-style (aeguard design; Park et al. arXiv 2407.04597, EAR "
                                         "arXiv 2310.04010)",
                                 "mask_ratio": float(self.mask_ratio), "mask_rule": self.mask_rule,
                                 "n_masks": int(getattr(self, "n_masks_", self.n_masks)),
                                 "attenuation": bool(self.attenuation),
                                 "gate": self.gate, "faithful": bool(self.faithful),
                                 "skip_levels_at_inference": self._param("skip_levels_at_inference", "all"),
                                 "active_rounds": int(self.active_rounds), "corruption_prob":
                                 float(self.corruption_prob), "lam": float(self.lam), "recon_on": self.recon_on}
        if model is not None:
            block.update(n_units=int(model.n_units), n_masked=int(model.k))
            if isinstance(model, ImageFader):
                block.update(patch_size=model.patch, grid=list(model.grid), levels=model.levels,
                             channels=list(model.channels), image_score=model.score_kind)
            else:
                block.update(groups=[int(g) for g in self.groups_], grouping=self.grouping,
                             hidden=list(model.sizes[1:]))
        if hasattr(self, "active_info_"):
            block["stage_b_rounds"] = list(self.active_info_)
        return {**super().manifest_extra(), "fader": block}
