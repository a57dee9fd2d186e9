"""TopK sparse autoencoder (Gao et al., ``openai/sparse_autoencoder``) and its code-space OOD scoring head.

Framework-free torch; this is what is exported to ONNX. The graph runs:
normalisation -> encoder -> ``TopK`` -> ``ReLU`` -> ``ScatterElements`` (the sparse ``code``) -> decoder ->
``s_rec``; ``s_knn`` by a MatMul of the code with the reference codes (constant) -> ``TopK(K)`` -> mean;
``s_rare`` by Gather from the ``rarity`` constant; ``s_cap`` (with classes) by Gather of the class activation
profiles and an in-graph Spearman correlation (average ranks from pairwise comparisons).

Two modules are declared ``keep_fp32``: :class:`TopKEncoder` (everything that feeds the TopK selection; INT8
rounding of the pre-activations changes which latents fire) and :class:`CodeKNN` (Euclidean, by default, or
cosine similarities against the reference codes, ranked by TopK). The decoder may be quantised.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Gao's layer-norm epsilon (``LN(x, eps=1e-5)`` in ``sparse_autoencoder/model.py``)
LN_EPS = 1e-5
#: a latent "fires" when it is selected with a value above this (Gao's ``vals > 1e-3`` in ``train.py``)
FIRE_EPS = 1e-3


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Gao's per-sample layer norm: ``(x - mean_features(x)) / (std_features(x) + 1e-5)`` (std unbiased)."""
    mu = x.mean(dim=-1, keepdim=True)
    x = x - mu
    return x / (x.std(dim=-1, keepdim=True) + LN_EPS)


def layer_norm_graph(x: torch.Tensor) -> torch.Tensor:
    """:func:`layer_norm` from sums only: opset-18 ``ReduceMean`` does not convert to the legacy opset 17 (onnx's
    version converter rejects its ``noop_with_empty_axes``), ``ReduceSum`` does. Equal to :func:`layer_norm` up to
    float rounding (the mean is bit-identical, torch's fused std differs by about 1 ulp)."""
    d = x.shape[-1]
    x = x - x.sum(dim=-1, keepdim=True) / d
    return x / (torch.sqrt((x * x).sum(dim=-1, keepdim=True) / max(d - 1, 1)) + LN_EPS)


def topk_code(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``z = scatter(idx, ReLU(v))`` with ``(idx, v) = TopK(pre, k)``: the code, indices and (ReLU'd) values."""
    top = torch.topk(pre, k=k, dim=-1)
    vals = torch.relu(top.values)
    code = torch.zeros_like(pre).scatter(-1, top.indices, vals)
    return code, top.indices, vals


class TopKEncoder(nn.Module):
    """Normalisation, ``W_enc (x_n - b_pre) + b_enc`` and the TopK code; declared FP32 (it feeds TopK)."""

    keep_fp32 = True

    def __init__(self, n_features: int, n_latents: int, k: int, pre_bias: np.ndarray, layer_norm: bool) -> None:
        super().__init__()
        linear = nn.Linear(n_features, n_latents, bias=False)  # Gao: default nn.Linear init of the encoder
        self.weight = nn.Parameter(linear.weight.detach().clone())  # n_latents x n_features
        self.latent_bias = nn.Parameter(torch.zeros(n_latents))
        self.pre_bias = nn.Parameter(torch.as_tensor(pre_bias, dtype=torch.float32).clone())
        self.k = int(k)
        self.layer_norm = bool(layer_norm)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Training steps use torch's ``std`` (so trainings, and the training cache, stay bit-identical); scoring
        and the exported graph use the sum form that converts to the legacy opset."""
        if not self.layer_norm:
            return x
        return layer_norm(x) if self.training else layer_norm_graph(x)

    def pre_act(self, x_n: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x_n - self.pre_bias, self.weight, self.latent_bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x_n = self.normalize(z)
        code, idx, vals = topk_code(self.pre_act(x_n), self.k)
        return x_n, code, idx, vals


class CodeKNN(nn.Module):
    """Mean distance of a code to its K nearest reference codes; declared FP32 (ranked by TopK).

    ``metric="euclidean"`` (the detector's default, an aeguard departure from the spec): Euclidean distance
    between the raw codes, which keeps the code's magnitude (cosine is scale-free and ranks below chance, see
    docs/sae_ood.md); the squared reference norms are constants.
    ``metric="cosine"`` (the spec's ``s_knn``): ``1 - cos``, 1 for a zero code; the reference codes and their
    inverse norms are graph constants (a zero reference code gets inverse norm 0: similarity 0 with everything).
    """

    keep_fp32 = True

    def __init__(self, refs: np.ndarray, n_neighbors: int, metric: str = "euclidean") -> None:
        super().__init__()
        refs64 = np.asarray(refs, dtype=np.float64)
        norms = np.linalg.norm(refs64, axis=1)
        inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
        self.register_buffer("refs", torch.as_tensor(refs64, dtype=torch.float32))
        if metric == "cosine":
            self.register_buffer("ref_inv_norm", torch.as_tensor(inv, dtype=torch.float32))
        else:
            self.register_buffer("ref_sq", torch.as_tensor(norms ** 2, dtype=torch.float32))
        self.n_neighbors = int(n_neighbors)
        self.metric = metric

    def similarities(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarity to every reference code (B x n_ref; cosine, or minus the squared Euclidean distance) and
        whether the code is non-zero (B)."""
        sq = (code * code).sum(dim=1, keepdim=True)
        norm = torch.sqrt(sq)
        nonzero = norm > 0
        if self.metric == "euclidean":
            return -torch.clamp(sq - 2.0 * (code @ self.refs.t()) + self.ref_sq, min=0.0), nonzero[:, 0]
        unit = code / torch.where(nonzero, norm, torch.ones_like(norm))
        return (unit @ self.refs.t()) * self.ref_inv_norm, nonzero[:, 0]

    def distance(self, sims: torch.Tensor, nonzero: torch.Tensor) -> torch.Tensor:
        top = torch.topk(sims, self.n_neighbors, dim=1).values
        # sums / K, not ``.mean``: opset-18 ReduceMean does not convert to the legacy opset 17 (onnx's version
        # converter rejects its ``noop_with_empty_axes``), ReduceSum does
        if self.metric == "euclidean":
            return torch.sqrt(-top).sum(dim=1) / self.n_neighbors
        dist = 1.0 - top.sum(dim=1) / self.n_neighbors
        return torch.where(nonzero, dist, torch.ones_like(dist))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.distance(*self.similarities(code))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Average (1-based) ranks along the last axis from pairwise comparisons: ties share their mean rank.

    ``rank_i = #{j: v_j < v_i} + (#{j: v_j == v_i} + 1) / 2``; exportable (no sort), cheap for 16 values.
    """
    a = values.unsqueeze(-1)
    b = values.unsqueeze(-2)
    less = (b < a).to(values.dtype).sum(dim=-1)
    equal = (b == a).to(values.dtype).sum(dim=-1)
    return less + (equal + 1.0) / 2.0


class ClassProfiles(nn.Module):
    """``s_cap = 1 - max_c Spearman(z[CAP_c], mu_c[CAP_c])`` (Oh et al.'s class activation profiles).

    ``cap_idx`` (C x m) are the top-m latents of each class mean code ``mu_c``; ``cap_ranks`` their centred,
    unit-norm average ranks. A row whose profile values are all equal (typically all zero: none of the class's
    latents fired) has no defined correlation; it counts as 0 (aeguard).
    """

    def __init__(self, class_means: np.ndarray, size: int) -> None:
        super().__init__()
        means = torch.as_tensor(np.asarray(class_means, dtype=np.float64), dtype=torch.float32)
        size = int(min(size, means.shape[1]))
        idx = torch.topk(means, size, dim=1).indices
        ranks = average_ranks(torch.gather(means, 1, idx))
        ranks = ranks - ranks.mean(dim=1, keepdim=True)
        norm = torch.sqrt((ranks * ranks).sum(dim=1, keepdim=True))
        self.register_buffer("cap_idx", idx)
        self.register_buffer("cap_ranks", ranks / torch.where(norm > 0, norm, torch.ones_like(norm)))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        values = code[:, self.cap_idx]  # B x C x m
        ranks = average_ranks(values)
        ranks = ranks - ranks.sum(dim=-1, keepdim=True) / ranks.shape[-1]  # no ReduceMean (legacy opset 17)
        norm = torch.sqrt((ranks * ranks).sum(dim=-1))
        corr = (ranks * self.cap_ranks).sum(dim=-1) / torch.where(norm > 0, norm, torch.ones_like(norm))
        # TopK(1), not ``max``: opset-18 ReduceMax does not convert to the legacy opset 17
        return 1.0 - torch.topk(corr, 1, dim=1).values[:, 0]


class SparseAutoencoder(nn.Module):
    """TopK SAE: ``z = TopK_ReLU(W_enc (x_n - b_pre) + b_enc)``, ``x^_n = W_dec z + b_pre`` (unit-norm columns).

    Init as Gao's ``FastAutoencoder``: default encoder init, ``W_dec = W_enc^T`` (tied init, untied weights),
    decoder columns unit norm, ``b_pre`` given (the geometric median). The scoring head (``knn``, ``rarity``,
    ``profiles``, the constants ``rec_denom`` and ``scales``) is attached by the detector after training.
    """

    def __init__(self, n_features: int, n_latents: int, k: int, pre_bias: np.ndarray, layer_norm: bool = False,
                 components: tuple[str, ...] = ("rec", "knn")) -> None:
        super().__init__()
        self.encoder = TopKEncoder(n_features, n_latents, k, pre_bias, layer_norm)
        self.decoder = nn.Parameter(self.encoder.weight.detach().t().clone())  # d x n, tied init
        with torch.no_grad():
            self.normalize_decoder()
        self.n_latents = int(n_latents)
        self.components = tuple(components)
        self.register_buffer("rec_denom", torch.ones(()))
        self.register_buffer("rarity", torch.zeros(n_latents))
        self.register_buffer("no_fire_rarity", torch.zeros(()))
        self.register_buffer("scales", torch.ones(4))
        self.knn: CodeKNN | None = None
        self.profiles: ClassProfiles | None = None

    # --- Gao's decoder constraints -------------------------------------------------------------------------
    def normalize_decoder(self) -> None:
        """``W_dec /= ||W_dec||_col`` (``unit_norm_decoder_``)."""
        self.decoder.data /= self.decoder.data.norm(dim=0, keepdim=True).clamp_min(1e-12)

    def project_decoder_grad(self) -> None:
        """Remove from each column's gradient its component along the column
        (``unit_norm_decoder_grad_adjustment_``)."""
        grad = self.decoder.grad
        if grad is not None:
            grad -= (self.decoder.data * grad).sum(dim=0, keepdim=True) * self.decoder.data

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return code @ self.decoder.t() + self.encoder.pre_bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction in normalised space."""
        return self.decode(self.encoder(z)[1])

    # --- scoring ---------------------------------------------------------------------------------------------
    def s_rare(self, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Mean rarity ``-log(f_j + 1/N)`` over the active latents; ``-log(1/N)`` when none is active."""
        active = (vals > 0).to(vals.dtype)
        count = active.sum(dim=1)
        total = (self.rarity[idx] * active).sum(dim=1)
        return torch.where(count > 0, total / torch.where(count > 0, count, torch.ones_like(count)),
                           self.no_fire_rarity.expand_as(count))

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score, per-feature contributions, the components and the sparse ``code``.

        ``score = sum over the chosen components of s_c / scale_c``. ``contrib`` (sums to the score): the
        ``s_rec`` term per feature as each feature's squared residual; the code-space terms (``s_knn``,
        ``s_rare``, ``s_cap``) spread over the features in proportion to ``((W_dec z)_j)^2``, the energy that
        the active atoms write onto each feature (evenly when the code is zero).
        """
        x_n, code, idx, vals = self.encoder(z)
        t_n = x_n if target is z else self.encoder.normalize(target)
        recon = self.decode(code)
        resid2 = (t_n - recon) ** 2
        s_rec = resid2.sum(dim=1) / self.rec_denom
        out: dict[str, torch.Tensor] = {"s_rec": s_rec}
        if self.knn is not None:
            out["s_knn"] = self.knn(code)
        out["s_rare"] = self.s_rare(idx, vals)
        if self.profiles is not None:
            out["s_cap"] = self.profiles(code)
        order = ("rec", "knn", "rare", "cap")
        code_term = torch.zeros_like(s_rec)
        rec_weight = torch.zeros_like(s_rec)
        for c in self.components:
            weight = 1.0 / self.scales[order.index(c)]
            if c == "rec":
                rec_weight = rec_weight + weight
            else:
                code_term = code_term + out[f"s_{c}"] * weight
        written = (recon - self.encoder.pre_bias) ** 2
        energy = written.sum(dim=1, keepdim=True)
        share = torch.where(energy > 0, written / torch.where(energy > 0, energy, torch.ones_like(energy)),
                            torch.full_like(written, 1.0 / written.shape[1]))
        contrib = resid2 * (rec_weight / self.rec_denom)[:, None] + code_term[:, None] * share
        return {"score": contrib.sum(dim=1), "contrib": contrib, **out, "code": code}
