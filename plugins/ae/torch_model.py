"""Plain MLP autoencoder (framework-free torch; this is what gets exported to ONNX).

Layer sizes follow the MSS-PAE authors' ``get_model_args(d)`` rule (``apre.md`` section 2), so the AE
baseline and the probabilistic AE differ only in their output head.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_sizes(d: int) -> list[int]:
    """Encoder widths from input to latent: d, r(d/2)[, r(d/4)[, r(d/8) or r(d/16)]] (Python round)."""
    def r(x: float) -> int:
        return max(1, round(x))

    if d < 20:
        return [d, r(d / 2)]
    if d < 100:
        return [d, r(d / 2), r(d / 4)]
    if d < 200:
        return [d, r(d / 2), r(d / 4), r(d / 8)]
    return [d, r(d / 2), r(d / 4), r(d / 16)]


def mlp_autoencoder(d: int, out_features: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Encoder (ReLU after every layer, latent included) and decoder (linear output layer)."""
    sizes = layer_sizes(d)
    enc: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        enc += [nn.Linear(a, b), nn.ReLU()]
    rev = sizes[::-1]
    dec: list[nn.Module] = []
    for a, b in zip(rev[:-2], rev[1:-1]):
        dec += [nn.Linear(a, b), nn.ReLU()]
    dec.append(nn.Linear(rev[-2], out_features))
    return nn.Sequential(*enc), nn.Sequential(*dec)


class AutoEncoder(nn.Module):
    """MLP autoencoder scored by the squared reconstruction error against a target."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.encoder, self.decoder = mlp_autoencoder(n_features, n_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(z))

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """MSE score: ``sum_j (AE(z)_j - t_j)^2``; ``contrib`` holds the per-feature terms."""
        contrib = (self(z) - target) ** 2
        return {"score": contrib.sum(dim=1), "contrib": contrib}
