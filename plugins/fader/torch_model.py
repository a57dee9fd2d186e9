"""FADeR-style inpainting autoencoders (framework-free torch; this is what is exported to ONNX).

Spec ``fader.md`` (Park et al., arXiv 2407.04597, on EAR, arXiv 2310.04010). The paper's internals are not
public: everything below is aeguard design consistent with its abstract, named "FADeR-style".

One scoring graph, one forward pass per sample (``n_masks = 1``)::

    x (standardized rows; images mapped back to [0, 1] pixels)
    -> mask rule (suspicion per group/patch -> TopK -> ScatterElements: M in {0, 1}^P)   [keep_fp32]
    -> hint     x~ = (1 - up(M)) * x + up(M) * H(x)   (quartile-bin centres / mosaic)
    -> U-Net    encoder F_1..F_L; FADeR MLP s = sigmoid(W2 GELU(W1 F_L + b1) + b2); F'_l = (1 - map_l(s)) F_l
    -> error    A = (t - x^)^2;  tabular score = sum_j A_j;  image score = max(GaussBlur(sum_c A))

Outputs: ``score``, ``contrib`` (A, per feature / pixel), ``masked_error`` (the sum of A over masked features),
``mask`` (B x P) and ``soft_scores`` (B x P, the FADeR soft group/patch scores s; zeros for the stage-A base);
images add ``error_sum`` (the sum of A, what ``contrib`` sums to).

``n_masks = K > 1`` is the RIAD-style multi-mask baseline: K fixed disjoint masks that cover every group/patch;
the batch is tiled K times and each feature's error is taken from the pass in which it was masked.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: the normal-consistency factor of the MAD
MAD_FACTOR = 1.4826


def hidden_sizes(d: int) -> tuple[int, int, int]:
    """Tabular U-Net widths ``h1 = max(16, round(d/2))``, ``h2 = max(8, round(d/4))``, ``b = max(4, round(d/8))``."""
    return max(16, round(d / 2)), max(8, round(d / 4)), max(4, round(d / 8))


def fader_hidden(channels: int) -> int:
    """The FADeR MLP's hidden width ``max(16, C / 4)`` (spec section 8; aeguard)."""
    return max(16, channels // 4)


def n_masked(n_units: int, ratio: float) -> int:
    """``ceil(q P)`` groups/patches masked, at least 1 and at most P."""
    return int(min(n_units, max(1, math.ceil(ratio * n_units - 1e-9))))


def scatter_mask(indices: torch.Tensor, n_units: int) -> torch.Tensor:
    """A {0, 1} float mask (B x P) with ones at ``indices`` (B x k): ScatterElements in the graph."""
    zeros = torch.zeros(indices.shape[0], n_units, dtype=torch.float32, device=indices.device)
    return zeros.scatter(1, indices, torch.ones_like(indices, dtype=torch.float32))


def random_mask(batch: int, n_units: int, k: int, device: torch.device) -> torch.Tensor:
    """k uniformly drawn groups/patches per row (torch's global generator: seeded by the fit)."""
    idx = torch.topk(torch.rand(batch, n_units, device=device), k, dim=1).indices
    return scatter_mask(idx, n_units)


def partitions(n_units: int, n_masks: int, seed: int) -> np.ndarray:
    """K disjoint masks (K x P) covering every unit: a seeded permutation dealt round-robin (RIAD-style)."""
    perm = np.random.default_rng(seed).permutation(n_units)
    out = np.zeros((n_masks, n_units), dtype=np.float32)
    for i, unit in enumerate(perm):
        out[i % n_masks, unit] = 1.0
    return out


class TabularSuspicion(nn.Module):
    """``susp_g = mean_{j in g} |x_j - median_j| / (1.4826 MAD_j + 1e-5)`` and the group means of x (B x G)."""

    def __init__(self, median: np.ndarray, mad_scale: np.ndarray, group_mean: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("median", torch.as_tensor(np.asarray(median, np.float32)))
        self.register_buffer("mad_scale", torch.as_tensor(np.asarray(mad_scale, np.float32)))
        self.register_buffer("group_mean", torch.as_tensor(np.asarray(group_mean, np.float32)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.abs(x - self.median) / self.mad_scale) @ self.group_mean, x @ self.group_mean


class ImageSuspicion(nn.Module):
    """``susp_p`` = mean over patch p (and channels) of ``|x - mean normal image|``, and the patch means of x."""

    def __init__(self, mean_image: np.ndarray, patch: int) -> None:
        super().__init__()
        self.register_buffer("mean_image", torch.as_tensor(np.asarray(mean_image, np.float32)))
        self.patch = int(patch)

    def patch_mean(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.mean(dim=1, keepdim=True), self.patch).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.patch_mean(torch.abs(x - self.mean_image)), self.patch_mean(x)


class MaskRule(nn.Module):
    """Suspicion per group/patch, TopK, ScatterElements: the deterministic mask (no network pass).

    Declared FP32 for the INT8 variant, suspicion included (rounding would change which units TopK picks).
    ``mode="random"`` (ablation, spec section 9.3): the TopK runs over ``pooled(x) @ R`` with a fixed seeded
    Gaussian R instead of the suspicion, a mask unrelated to where the row deviates but still a function of the
    row (so scores repeat and ONNX matches torch; a per-call random draw would do neither).
    """

    keep_fp32 = True

    def __init__(self, scorer: nn.Module, n_units: int, k: int, mode: str, seed: int) -> None:
        super().__init__()
        if mode not in ("deterministic", "random"):
            raise ValueError(f"mask_rule must be 'deterministic' or 'random', got {mode!r}")
        self.scorer = scorer
        self.n_units, self.k, self.mode = int(n_units), int(k), mode
        proj = np.random.default_rng(seed + 7919).standard_normal((n_units, n_units))
        self.register_buffer("projection", torch.as_tensor(proj, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        suspicion, pooled = self.scorer(x)
        ranking = suspicion if self.mode == "deterministic" else pooled @ self.projection
        return scatter_mask(torch.topk(ranking, self.k, dim=1).indices, self.n_units)


class FaderNet(nn.Module):
    """Shared FADeR-style logic: masks, hint mixing, gated U-Net pass, multi-mask tiling and the outputs.

    Subclasses (:class:`TabularFader`, :class:`ImageFader`) provide the working space (``unit``), the suspicion,
    pooling and up-sampling of units, the hint, the encoder/decoder and the gates ``map_l``.
    Python flags chosen after training (:meth:`set_inference`): ``attenuate`` (use the FADeR gates; False for
    the stage-A base), ``drop_shallow`` (EAR's ``skip_levels_at_inference="deep"``: the shallowest skip off).
    """

    n_units: int

    def _init_common(self, scorer: nn.Module, n_units: int, mask_ratio: float, mask_rule: str, n_masks: int,
                     seed: int) -> None:
        self.n_units = int(n_units)
        self.k = n_masked(self.n_units, mask_ratio)
        self.rule = MaskRule(scorer, self.n_units, self.k, mask_rule, seed)
        self.n_masks = int(n_masks)
        if self.n_masks > 1:  # fixed partitions replace the rule: nothing in the graph is ranked
            self.rule.keep_fp32 = False
        if self.n_masks > self.n_units:
            raise ValueError(f"n_masks must be at most the number of groups/patches ({self.n_units}), "
                             f"got {self.n_masks}")
        self.register_buffer("partitions", torch.as_tensor(partitions(self.n_units, max(1, self.n_masks), seed)))
        self.attenuate = False
        self.drop_shallow = False

    def set_inference(self, attenuate: bool, drop_shallow: bool) -> None:
        self.attenuate = bool(attenuate)
        self.drop_shallow = bool(drop_shallow)

    # --- subclass hooks ------------------------------------------------------------------------------
    def unit(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def up(self, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hint(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def decode(self, skips: list[torch.Tensor], gated: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def fader_logits(self, deepest: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gates(self, s: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def base_parameters(self) -> list[nn.Parameter]:
        """Stage A's parameters: everything but the FADeR MLP."""
        mine = {id(p) for p in self.fader.parameters()}
        return [p for p in self.parameters() if id(p) not in mine]

    # --- passes --------------------------------------------------------------------------------------
    def rule_mask(self, x: torch.Tensor) -> torch.Tensor:
        return self.rule(x)

    def mix(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.up(mask)
        return (1.0 - m) * x + m * self.hint(x)

    def reconstruct(self, x_tilde: torch.Tensor, gated: bool, drop_shallow: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x^, FADeR logits or None)``: the U-Net on the hinted input, with or without the FADeR gates."""
        skips = self.encode(x_tilde)
        logits = None
        used = list(skips)
        if gated:
            logits = self.fader_logits(skips[-1])
            used = [a * f for a, f in zip(self.gates(torch.sigmoid(logits)), skips)]
        if drop_shallow:
            used[0] = torch.zeros_like(used[0])
        return self.decode(skips, used), logits

    def passes(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Error map A (input layout), the mask, the soft scores and up(mask), for one or K masks."""
        if self.n_masks <= 1:
            mask = self.rule_mask(x)
            xhat, logits = self.reconstruct(self.mix(x, mask), self.attenuate, self.drop_shallow)
            err = (target - xhat) ** 2
            soft = torch.sigmoid(logits) if logits is not None else torch.zeros_like(mask)
            return err, mask, soft, self.up(mask)
        K, B = self.n_masks, x.shape[0]
        tail = tuple(x.shape[1:])
        def tile(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(0).expand(K, *t.shape).reshape(K * B, *tail)

        xk, hint = tile(x), tile(self.hint(x))  # the hint once per row, not once per pass
        masks = self.partitions.unsqueeze(1).expand(K, B, self.n_units).reshape(K * B, self.n_units)
        upm = self.up(masks)
        xhat, logits = self.reconstruct((1.0 - upm) * xk + upm * hint, self.attenuate, self.drop_shallow)
        err = (((tile(target) - xhat) ** 2) * upm).reshape(K, B, *tail).sum(dim=0)
        ones = torch.ones(B, self.n_units, dtype=x.dtype, device=x.device)
        soft = torch.zeros_like(ones) if logits is None else \
            (torch.sigmoid(logits) * masks).reshape(K, B, self.n_units).sum(dim=0)
        return err, ones, soft, torch.ones_like(x)

    def train_pass(self, x: torch.Tensor, mask: torch.Tensor, gated: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What training sees: ``(x^, logits)`` of the hinted input with all skips on."""
        return self.reconstruct(self.mix(x, mask), gated, drop_shallow=False)

    def unit_errors(self, err: torch.Tensor) -> torch.Tensor:
        """Mean error per group/patch (B x P) from a per-feature/pixel error map."""
        raise NotImplementedError


class TabularFader(FaderNet):
    """Skip-MLP U-Net on standardized features with FADeR gates from attribution matrices (spec section 2).

    Encoder ``F_1 = ReLU(W_1 x~)`` (h1), ``F_2 = ReLU(W_2 F_1)`` (h2), ``code = ReLU(W_3 F_2)`` (b); decoder
    ``h2 <- code``, ``h1 <- [h2, F'_2]``, ``d <- [h1, F'_1]`` (ReLU, linear output). FADeR MLP F_2 -> max(16, h2/4)
    -> G. Gates ``a_l = 1 - A_l s`` with ``A_1 = rownorm(|W_1| G)``, ``A_2 = rownorm(|W_2| A_1)`` (set after stage
    A by :meth:`set_attribution`), or ``gate="scalar"``: ``a_l = 1 - max_g s_g``.

    Constants: ``groups`` (d x G membership), ``rule.scorer.median`` and ``.mad_scale`` (mask rule), ``edges``
    (d x 3 quartile edges) and ``centres`` (d x 4 bin medians, flattened for the Gather of the hint).
    """

    def __init__(self, n_features: int, groups: np.ndarray, median: np.ndarray, mad_scale: np.ndarray,
                 edges: np.ndarray, centres: np.ndarray, mask_ratio: float = 0.25, mask_rule: str = "deterministic",
                 n_masks: int = 1, gate: str = "unit", seed: int = 0) -> None:
        super().__init__()
        d = int(n_features)
        groups = np.asarray(groups, dtype=np.float32)
        if groups.shape[0] != d or not np.allclose(groups.sum(axis=1), 1.0):
            raise ValueError("groups must be a d x G membership matrix with one group per feature")
        if gate not in ("unit", "scalar"):
            raise ValueError(f"gate must be 'unit' or 'scalar', got {gate!r}")
        self.d, self.gate = d, gate
        n_groups = groups.shape[1]
        group_mean = groups / groups.sum(axis=0, keepdims=True)
        self._init_common(TabularSuspicion(median, mad_scale, group_mean), n_groups, mask_ratio, mask_rule, n_masks,
                          seed)
        self.register_buffer("groups", torch.as_tensor(groups))
        self.register_buffer("group_mean", torch.as_tensor(group_mean))
        self.register_buffer("edges", torch.as_tensor(np.asarray(edges, np.float32)))
        self.register_buffer("centres", torch.as_tensor(np.asarray(centres, np.float32).reshape(-1)))
        self.register_buffer("centre_offset", torch.arange(d, dtype=torch.int64) * 4)
        h1, h2, b = hidden_sizes(d)
        self.sizes = (d, h1, h2, b)
        self.enc1, self.enc2, self.enc3 = nn.Linear(d, h1), nn.Linear(h1, h2), nn.Linear(h2, b)
        self.dec3, self.dec2, self.dec1 = nn.Linear(b, h2), nn.Linear(2 * h2, h1), nn.Linear(2 * h1, d)
        self.fader = nn.Sequential(nn.Linear(h2, fader_hidden(h2)), nn.GELU(), nn.Linear(fader_hidden(h2), n_groups))
        self.register_buffer("attr1", torch.zeros(h1, n_groups))
        self.register_buffer("attr2", torch.zeros(h2, n_groups))

    @torch.no_grad()
    def set_attribution(self) -> None:
        """``A_1[u, g] = sum_{j in g} |W_1[u, j]| / sum_j |W_1[u, j]|``, ``A_2 = rownorm(|W_2| A_1)`` from the
        (frozen) stage-A weights; rows sum to 1, so ``a_l = 1 - A_l s`` stays in [0, 1]."""
        def rownorm(m: torch.Tensor) -> torch.Tensor:
            total = m.sum(dim=1, keepdim=True)
            return torch.where(total > 0, m / torch.where(total > 0, total, torch.ones_like(total)),
                               torch.full_like(m, 1.0 / m.shape[1]))

        a1 = rownorm(self.enc1.weight.abs() @ self.groups)
        self.attr1.copy_(a1)
        self.attr2.copy_(rownorm(self.enc2.weight.abs() @ a1))

    def unit(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def up(self, mask: torch.Tensor) -> torch.Tensor:
        return mask @ self.groups.t()

    def hint(self, x: torch.Tensor) -> torch.Tensor:
        """Quartile-bin centre: bin index = ReduceSum(x >= edges), then Gather of the bin's training median."""
        index = (x.unsqueeze(-1) >= self.edges).to(torch.int64).sum(dim=-1) + self.centre_offset
        return self.centres[index]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = torch.relu(self.enc1(x))
        return [f1, torch.relu(self.enc2(f1))]

    def decode(self, skips: list[torch.Tensor], gated: list[torch.Tensor]) -> torch.Tensor:
        code = torch.relu(self.enc3(skips[1]))
        h2 = torch.relu(self.dec3(code))
        h1 = torch.relu(self.dec2(torch.cat([h2, gated[1]], dim=1)))
        return self.dec1(torch.cat([h1, gated[0]], dim=1))

    def fader_logits(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.fader(deepest)

    def gates(self, s: torch.Tensor) -> list[torch.Tensor]:
        if self.gate == "scalar":
            a = 1.0 - s.max(dim=1, keepdim=True).values
            return [a, a]
        return [1.0 - s @ self.attr1.t(), 1.0 - s @ self.attr2.t()]

    def unit_errors(self, err: torch.Tensor) -> torch.Tensor:
        return err @ self.group_mean

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``score = sum_j A_j`` over all features, ``contrib = A`` (sums to the score)."""
        err, mask, soft, upm = self.passes(self.unit(z), self.unit(target))
        return {"score": err.sum(dim=1), "contrib": err, "masked_error": (err * upm).sum(dim=1),
                "mask": mask, "soft_scores": soft}


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 2-D Gaussian, radius ``ceil(2 sigma)``."""
    radius = max(1, int(math.ceil(2 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU())


class ImageFader(FaderNet):
    """Conv U-Net with switchable, FADeR-gated skips on [0, 1] pixels (spec section 2, images).

    Levels 1 .. L at resolutions 1, 1/2, .. 1/2^(L-1) with ``L = log2(patch) + 1`` (8x8 digits, 2x2 patches: two
    levels; 28-32 px, 4x4 patches: three), channels ``width * 2^(l-1)`` (32, 64, 128), two 3x3 conv + ReLU each,
    2x2 max-pool between levels. The deepest skip F_L is at the patch grid, so ``pool_p`` is the identity and the
    FADeR MLP is two 1x1 convs (C_L -> max(16, C_L/4) -> 1). A 3x3-conv bottleneck at the deepest resolution
    reads the gated F'_L (aeguard: at 1/4 resolution an ungated bottleneck would carry the whole patch content
    around the gates); the mirrored decoder up-samples with transposed convs and concatenates F'_l at each level;
    sigmoid output. ``map_l`` is nearest up-sampling of the patch map to level l, broadcast over channels.

    Constants: ``unit_mean`` / ``unit_scale`` (per-channel standardization, undone so the net and the error work on
    [0, 1] pixels), ``rule.scorer.mean_image`` (the mask rule's reference), ``blur`` (the fixed Gaussian of the
    score).
    """

    def __init__(self, image_shape: tuple[int, int, int], unit_mean: np.ndarray, unit_scale: np.ndarray,
                 mean_image: np.ndarray, patch: int = 4, width: int = 32, mask_ratio: float = 0.25,
                 mask_rule: str = "deterministic", n_masks: int = 1, gate: str = "unit", blur_sigma: float = 1.0,
                 score: str = "max", seed: int = 0) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if patch not in (2, 4, 8):
            raise ValueError(f"patch_size must be 2, 4 or 8, got {patch!r}")
        if h % patch or w % patch:
            raise ValueError(f"patch_size={patch} must divide the image size {h}x{w}")
        if gate not in ("unit", "scalar"):
            raise ValueError(f"gate must be 'unit' or 'scalar', got {gate!r}")
        if score not in ("max", "top1", "sum"):
            raise ValueError(f"image_score must be 'max', 'top1' or 'sum', got {score!r}")
        self.image_shape, self.patch, self.gate, self.score_kind = (c, h, w), int(patch), gate, score
        self.grid = (h // patch, w // patch)
        self.levels = int(round(math.log2(patch))) + 1
        self._init_common(ImageSuspicion(np.asarray(mean_image, np.float32).reshape(c, h, w), patch),
                          self.grid[0] * self.grid[1], mask_ratio, mask_rule, n_masks, seed)
        self.register_buffer("unit_mean", torch.as_tensor(np.asarray(unit_mean, np.float32).reshape(c, 1, 1)))
        self.register_buffer("unit_scale", torch.as_tensor(np.asarray(unit_scale, np.float32).reshape(c, 1, 1)))
        kernel = gaussian_kernel(float(blur_sigma))
        self.register_buffer("blur", torch.as_tensor(kernel)[None, None])
        self.blur_pad = kernel.shape[0] // 2
        self.top_k = max(1, int(math.ceil(0.01 * h * w)))
        chans = [int(width) * 2 ** i for i in range(self.levels)]
        self.channels = chans
        self.down = nn.ModuleList([_block(c if i == 0 else chans[i - 1], chans[i]) for i in range(self.levels)])
        self.bottleneck = nn.Sequential(nn.Conv2d(chans[-1], chans[-1], 3, padding=1), nn.ReLU())
        self.merge = nn.ModuleList([_block(2 * chans[i], chans[i]) for i in range(self.levels)])
        self.upconv = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                     for i in range(self.levels - 1)])
        self.out = nn.Conv2d(chans[0], c, 1)
        hid = fader_hidden(chans[-1])
        self.fader = nn.Sequential(nn.Conv2d(chans[-1], hid, 1), nn.GELU(), nn.Conv2d(hid, 1, 1))

    def unit(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(z.shape[0], *self.image_shape) * self.unit_scale + self.unit_mean

    def _up_grid(self, m: torch.Tensor, factor: int) -> torch.Tensor:
        m = m.reshape(m.shape[0], 1, *self.grid)
        return m if factor == 1 else F.interpolate(m, scale_factor=float(factor), mode="nearest")

    def up(self, mask: torch.Tensor) -> torch.Tensor:
        return self._up_grid(mask, self.patch)

    def hint(self, x: torch.Tensor) -> torch.Tensor:
        """Mosaic: AveragePool over each patch, nearest Resize back (EAR's hint-providing idea)."""
        return F.interpolate(F.avg_pool2d(x, self.patch), scale_factor=float(self.patch), mode="nearest")

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        return skips

    def decode(self, skips: list[torch.Tensor], gated: list[torch.Tensor]) -> torch.Tensor:
        u = self.bottleneck(gated[-1])
        u = self.merge[-1](torch.cat([u, gated[-1]], dim=1))
        for i in range(self.levels - 2, -1, -1):
            u = torch.relu(self.upconv[i](u))
            u = self.merge[i](torch.cat([u, gated[i]], dim=1))
        return torch.sigmoid(self.out(u))

    def fader_logits(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.fader(deepest).flatten(1)

    def gates(self, s: torch.Tensor) -> list[torch.Tensor]:
        if self.gate == "scalar":
            a = (1.0 - s.max(dim=1).values).reshape(-1, 1, 1, 1)
            return [a] * self.levels
        return [1.0 - self._up_grid(s, 2 ** (self.levels - 1 - i)) for i in range(self.levels)]

    def unit_errors(self, err: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(err.mean(dim=1, keepdim=True), self.patch).flatten(1)

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image score ``max(GaussBlur(sum_c A))`` (or the mean of the top 1 % of A, or ``sum``: the sum of A);
        ``contrib = A`` per pixel, which sums to ``error_sum``."""
        err, mask, soft, upm = self.passes(self.unit(z), self.unit(target))
        emap = err.sum(dim=1, keepdim=True)
        contrib = err.flatten(1)
        if self.score_kind == "max":
            score = F.conv2d(emap, self.blur, padding=self.blur_pad).flatten(1).max(dim=1).values
        elif self.score_kind == "top1":
            score = torch.topk(emap.flatten(1), self.top_k, dim=1).values.mean(dim=1)
        else:  # the whole error, as `ae` scores: for whole-image changes (another digit) rather than local defects
            score = contrib.sum(dim=1)
        return {"score": score, "contrib": contrib, "error_sum": contrib.sum(dim=1),
                "masked_error": (err * upm).flatten(1).sum(dim=1), "mask": mask, "soft_scores": soft}
