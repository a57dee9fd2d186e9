"""Autoencoder with a linear latent and a latent Mahalanobis head (framework-free torch; exported to ONNX).

Denouden et al., arXiv 1812.02765 (``mahalanobis.md`` sections 2 and 5):

- tabular MLP ``D -> h1 -> h2 -> m -> h2 -> h1 -> D``, ReLU on hidden layers, a **linear** latent (a ReLU latent
  has exact zeros and a degenerate covariance), linear output (sigmoid when trained with BCE);
- small images (C x H x W): two stride-2 3x3 convolutions, a linear latent of 32, a mirrored decoder with
  transposed convolutions and a sigmoid output;
- score ``alpha * D_M(x) + beta * l(x)`` with ``D_M = || W (E(x) - mu) ||`` (``W`` the inverse Cholesky factor
  of the regularized latent covariance, a graph constant: no inverse is computed at scoring time) and ``l`` the
  per-sample mean squared error (or binary cross-entropy for [0, 1] images).

Class modes stack K Gaussians: ``mu`` is K x m and ``W`` is K x m x m (``per_class``) or one shared m x m
(``tied``); ``D_M = min_c D_M,c`` and the argmin is the integer component ``class``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: clamp of the reconstruction for the BCE term (spec section 5)
BCE_EPS = 1e-7
#: the same clamp on the decoder's logit: sigmoid(+-BCE_LOGIT) = 1 - 1e-7, 1e-7
BCE_LOGIT = float(np.log((1.0 - BCE_EPS) / BCE_EPS))


def latent_size(d: int) -> int:
    """Tabular latent ``m = clip(D // 4, 2, 32)`` (aeguard; the paper sweeps 2 .. 798)."""
    return int(min(32, max(2, d // 4)))


def mlp_sizes(d: int, m: int) -> list[int]:
    """Encoder widths ``[D, h1, h2, m]`` with ``h1 = max(2m, ceil(D/2))``, ``h2 = max(m, ceil(D/4))``."""
    return [d, max(2 * m, math.ceil(d / 2)), max(m, math.ceil(d / 4)), m]


class LatentMahalanobis(nn.Module):
    """``alpha * min_c || W_c (code - mu_c) ||`` and its argmin, from constants fitted after training.

    ``mu`` is K x m; ``whiten`` is K x m x m (one factor per Gaussian) or m x m (shared, ``tied`` and the single
    Gaussian). ``with_class``: the nearest Gaussian's index is a score component (class modes). Declared
    ``keep_fp32``: INT8 whitening would distort the distance the score is built on.
    """

    keep_fp32 = True

    def __init__(self, mu: np.ndarray, whiten: np.ndarray, alpha: float, with_class: bool = False) -> None:
        super().__init__()
        self.with_class = bool(with_class)
        mu = np.asarray(mu, dtype=np.float64)
        whiten = np.asarray(whiten, dtype=np.float64)
        if mu.ndim != 2 or whiten.ndim not in (2, 3) or (whiten.ndim == 3 and whiten.shape[0] != mu.shape[0]):
            raise ValueError(f"mu must be K x m and whiten m x m or K x m x m, got {mu.shape} and {whiten.shape}")
        self.n_gaussians = int(mu.shape[0])
        self.shared = whiten.ndim == 2
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.register_buffer("whiten_t", torch.as_tensor(np.swapaxes(whiten, -1, -2).copy(), dtype=torch.float32))
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float32))

    def whitened(self, code: torch.Tensor) -> torch.Tensor:
        """``W_c (code - mu_c)`` for every Gaussian: K x B x m."""
        diff = code.unsqueeze(0) - self.mu.unsqueeze(1)  # K x B x m
        return diff @ self.whiten_t  # shared: (K x B x m) @ (m x m); per class: batched K x (B x m) @ (m x m)

    def distances(self, code: torch.Tensor) -> torch.Tensor:
        """Unscaled ``D_M,c`` for every Gaussian: K x B."""
        return torch.sqrt((self.whitened(code) ** 2).sum(dim=-1))

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha * D_M, class)``: the scaled nearest-Gaussian distance (B) and its index (B, int64)."""
        dist = self.distances(code)
        if self.n_gaussians == 1:
            return self.alpha * dist[0], torch.zeros_like(dist[0], dtype=torch.int64)
        return self.alpha * dist.min(dim=0).values, torch.argmin(dist, dim=0)


def _conv_out(n: int) -> int:
    return (n + 2 - 3) // 2 + 1  # 3x3, stride 2, padding 1


def _deconv_padding(n_in: int, n_out: int) -> int:
    """``output_padding`` so a 3x3, stride-2, padding-1 transposed convolution maps ``n_in`` back to ``n_out``."""
    pad = n_out - ((n_in - 1) * 2 - 2 + 3)
    if pad not in (0, 1):
        raise ValueError(f"cannot mirror a stride-2 convolution from {n_in} to {n_out}")
    return pad


class _Unflatten(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(h.shape[0], *self.shape)


def conv_autoencoder(shape: tuple[int, int, int], m: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Spec section 2 small-image AE: Conv(C->32, s2) ReLU Conv(32->64, s2) ReLU Flatten Linear(-> m); mirror."""
    c, h, w = shape
    h1, w1 = _conv_out(h), _conv_out(w)
    h2, w2 = _conv_out(h1), _conv_out(w1)
    encoder = nn.Sequential(nn.Conv2d(c, 32, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(64 * h2 * w2, m))
    decoder = nn.Sequential(
        nn.Linear(m, 64 * h2 * w2), nn.ReLU(), _Unflatten((64, h2, w2)),
        nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1,
                           output_padding=(_deconv_padding(h2, h1), _deconv_padding(w2, w1))), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 3, stride=2, padding=1,
                           output_padding=(_deconv_padding(h1, h), _deconv_padding(w1, w))))
    return encoder, decoder


def mlp_autoencoder(d: int, m: int) -> tuple[nn.Sequential, nn.Sequential]:
    """ReLU hidden layers, linear latent, linear output layer."""
    sizes = mlp_sizes(d, m)
    enc: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        enc.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            enc.append(nn.ReLU())
    rev = sizes[::-1]
    dec: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
        dec.append(nn.Linear(a, b))
        if i < len(rev) - 2:
            dec.append(nn.ReLU())
    return nn.Sequential(*enc), nn.Sequential(*dec)


class MahalanobisAutoEncoder(nn.Module):
    """AE whose score adds the latent Mahalanobis distance to the reconstruction error.

    Rows arrive flat (B, D) and standardized. ``input_shape`` is ``(D,)`` (MLP) or ``(C, H, W)`` (conv AE; rows are
    reshaped inside). ``loss`` is "mse" or "bce"; BCE works on [0, 1] pixels: ``unit = (mean, scale)`` (per input
    position, the base's per-channel image statistics) maps standardized rows back, ``x01 = z * scale + mean``,
    exactly, for the input and the target; the output is a sigmoid, clamped to ``[1e-7, 1 - 1e-7]`` in ``l``.
    :attr:`latent` (the fitted Gaussians) and :attr:`beta` are set after training; before that ``score_against``
    uses the reconstruction term alone.
    """

    def __init__(self, input_shape: tuple[int, ...], latent: int, loss: str = "mse",
                 unit: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        if loss not in ("mse", "bce"):
            raise ValueError(f"loss must be 'mse' or 'bce', got {loss!r}")
        if loss == "bce" and unit is None:
            raise ValueError("loss='bce' needs the map of standardized rows back to [0, 1] pixels (unit)")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_features = int(np.prod(self.input_shape))
        self.m = int(latent)
        self.loss = loss
        if len(self.input_shape) == 3:
            self.encoder, self.decoder = conv_autoencoder(self.input_shape, self.m)  # type: ignore[arg-type]
        elif len(self.input_shape) == 1:
            self.encoder, self.decoder = mlp_autoencoder(self.n_features, self.m)
        else:
            raise ValueError(f"input rows must be vectors (D,) or images (C, H, W), got shape {self.input_shape}")
        self.pixels = unit is not None
        if unit is not None:
            self.register_buffer("unit_mean", torch.as_tensor(np.asarray(unit[0]).reshape(-1), dtype=torch.float32))
            self.register_buffer("unit_scale", torch.as_tensor(np.asarray(unit[1]).reshape(-1), dtype=torch.float32))
        self.latent: LatentMahalanobis | None = None
        self.register_buffer("beta", torch.tensor(1.0))

    def _input(self, z: torch.Tensor) -> torch.Tensor:
        """What the network and the loss see: [0, 1] pixels for BCE, else the standardized row."""
        z = z.reshape(z.shape[0], -1)
        return z * self.unit_scale + self.unit_mean if self.pixels else z

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        x = self._input(z)
        if len(self.input_shape) == 3:
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output, flat (B, D): the reconstruction (MSE) or its logit (BCE)."""
        return self.decoder(code).reshape(code.shape[0], -1)

    def reconstruct(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction, flat (B, D), in the space of :meth:`_input`."""
        out = self.decode(code)
        return torch.sigmoid(out) if self.loss == "bce" else out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(self.encode(z))

    def recon_terms(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-feature terms of ``l`` (B x D) of the decoder output ``out`` (:meth:`decode`) against a
        standardized ``target``: ``(t - x^)^2 / D`` or BCE ``/ D``.

        BCE is computed from the logit, ``t softplus(-a) + (1 - t) softplus(a)`` with ``a`` clamped to
        ``+-logit(1 - 1e-7)``: the spec's ``-(t log x^ + (1 - t) log(1 - x^))`` with ``x^`` clamped to
        ``[1e-7, 1 - 1e-7]``, exactly, but without forming ``1 - sigmoid(a)`` in float32, whose last-bit
        differences between torch and onnxruntime near saturation changed the term by up to 0.5 %.

        The target's own entropy ``H(t) = -(t log t + (1 - t) log(1 - t))`` is subtracted (aeguard design): BCE is
        not zero at a perfect reconstruction of a gray pixel, so a raw BCE score adds how gray an image is to how
        badly it is reconstructed; ``BCE - H`` is the Bernoulli KL divergence ``KL(t || x^)``, zero at a perfect
        reconstruction. ``H`` has no parameters, so training (gradients, early stopping) is unchanged.
        """
        target = self._input(target)
        if self.loss == "bce":
            logit = torch.clamp(out, -BCE_LOGIT, BCE_LOGIT)
            terms = target * nn.functional.softplus(-logit) + (1.0 - target) * nn.functional.softplus(logit)
            t = torch.clamp(target, BCE_EPS, 1.0 - BCE_EPS)
            terms = terms + (target * torch.log(t) + (1.0 - target) * torch.log(1.0 - t))
        else:
            terms = (target - out) ** 2
        return terms / self.n_features

    def training_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Batch mean of the per-sample ``l`` (mean MSE or mean BCE over features)."""
        return self.recon_terms(self.decode(self.encode(z)), z).sum(dim=1).mean()

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``score = alpha D_M + beta l``; ``contrib_j = beta l_j + alpha D_M / D`` (sums to the score).

        Components: ``d_m`` (``alpha * D_M``), ``recon`` (``beta * l``, against ``target``: only this term sees a
        mean-shifted target) and, with several Gaussians, ``class`` (the nearest one, int64).
        """
        code = self.encode(z)
        recon = self.beta * self.recon_terms(self.decode(code), target)
        recon_sum = recon.sum(dim=1)
        if self.latent is None:
            d_m, cls = torch.zeros_like(recon_sum), None
        else:
            d_m, cls = self.latent(code)
        contrib = recon + d_m.unsqueeze(1) / self.n_features
        out = {"score": recon_sum + d_m, "contrib": contrib, "d_m": d_m, "recon": recon_sum}
        if cls is not None and self.latent is not None and self.latent.with_class:
            out["class"] = cls
        return out
