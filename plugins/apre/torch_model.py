"""The probabilistic autoencoder (PAE) of MSS-PAE / APRE, as framework-free torch (what is exported to ONNX).

Model and formulas follow the authors' code (Ra1demmmm/Autoencoder-based-Outlier-Detection, ``libs/model.py``,
``libs/loss.py``; ``apre.md`` sections 2, 3 and 5):

- the MLP of ``get_model_args(d)`` (shared with the ``ae`` plugin) with a ``2d`` linear output layer;
  ``mu = out[:, :d]``, ``s2 = softplus(out[:, d:])`` is a variance, no clamping;
- training loss PRE = ``APRE(x, x; 1, 1)``, averaged over the batch;
- score ``APRE(z, t; alpha, beta) = alpha * sum_j (t_j - mu_j)^2 / (s2_j + eps) + beta * sum_j log(s2_j + eps)``
  where ``t`` is ``z`` (WNLL) or its mean-shifted version (MSS-WNLL).

aeguard additions (label-free, see ``docs/apre.md``): ``var_floor``, a per-feature variance floor added to ``s2`` at
scoring time only (a zero vector reproduces the authors' score exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeguard.plugins.ae.torch_model import mlp_autoencoder

EPS = 1e-5


def pre_terms(mu: torch.Tensor, s2: torch.Tensor, target: torch.Tensor, alpha: float = 1.0,
              beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature error ``alpha (t - mu)^2 / (s2 + eps)`` and uncertainty ``beta log(s2 + eps)`` (B x d each)."""
    var = s2 + EPS
    return alpha * (target - mu).square() / var, beta * torch.log(var)


def pre_loss(mu: torch.Tensor, s2: torch.Tensor, target: torch.Tensor, batch_dim: int = 0) -> torch.Tensor:
    """PRE training loss: the batch mean of ``APRE(x, x; 1, 1)`` (2 x Gaussian NLL minus a constant).

    ``batch_dim`` is 0 for B x d tensors and 1 for feature-major (d x B) ones.
    """
    var = s2 + EPS
    return ((target - mu).square() / var + torch.log(var)).sum() / target.shape[batch_dim]


class ProbabilisticAutoEncoder(nn.Module):
    """PAE: mean and softplus variance per feature from one MLP; scores with APRE(alpha, beta).

    The output layer is one ``Linear(h, 2d)`` as in the authors' code; ``forward`` applies its two halves
    separately (``F.linear`` on weight slices), which is the same function but avoids slicing a (B x 2d)
    activation, whose strided softplus and zero-filled slice gradient dominated CPU training time.
    """

    def __init__(self, n_features: int, alpha: float = 0.5, beta: float = 2.0) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.encoder, self.decoder = mlp_autoencoder(self.n_features, 2 * self.n_features)
        self.register_buffer("var_floor", torch.zeros(self.n_features))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, s2)``, each B x d."""
        h = z
        for layer in self.encoder:
            h = layer(h)
        for layer in list(self.decoder)[:-1]:
            h = layer(h)
        head = self.decoder[-1]
        d = self.n_features
        mu = F.linear(h, head.weight[:d], head.bias[:d])
        s2 = F.softplus(F.linear(h, head.weight[d:], head.bias[d:]))
        return mu, s2

    def forward_t(self, z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` in feature-major layout: ``z_t`` is d x B, returns ``(mu_t, s2_t)`` (d x B each).

        The same function as :meth:`forward` (same weights, float rounding aside). On CPU, ``W @ H`` with a
        long batch axis runs several times faster than ``H @ W.T`` for the skinny layers of low-d tables
        (20,000 x 10 fit sets train about 1.7x faster per epoch), so training uses it for large fit sets.
        """
        h = z_t
        for layer in (*self.encoder, *list(self.decoder)[:-1]):
            h = torch.addmm(layer.bias[:, None], layer.weight, h) if isinstance(layer, nn.Linear) else layer(h)
        head = self.decoder[-1]
        d = self.n_features
        mu = torch.addmm(head.bias[:d, None], head.weight[:d], h)
        s2 = F.softplus(torch.addmm(head.bias[d:, None], head.weight[d:], h))
        return mu, s2

    def set_var_floor(self, floor: torch.Tensor) -> None:
        self.var_floor.copy_(torch.as_tensor(floor, dtype=self.var_floor.dtype).reshape(self.n_features))

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """APRE score of ``z`` against ``target``; ``contrib`` = error + uncertainty per feature (sums to score).

        Components: ``error`` (sum of error terms), ``uncertainty`` (sum of log-variance terms, may be
        negative) and ``shift_norm`` (``||target - z||``, zero without mean-shift scoring).
        """
        mu, s2 = self(z)
        error, uncertainty = pre_terms(mu, s2 + self.var_floor, target, self.alpha, self.beta)
        contrib = error + uncertainty
        return {"score": contrib.sum(dim=1), "contrib": contrib, "error": error.sum(dim=1),
                "uncertainty": uncertainty.sum(dim=1),
                "shift_norm": torch.sqrt((target - z).square().sum(dim=1))}
