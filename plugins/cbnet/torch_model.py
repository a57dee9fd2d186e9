"""CBNet-style networks (framework-free torch; this is what gets exported to ONNX).

- converter g: four dense layers (``cbnet.md`` section 2). Tables: d -> 2d -> d -> max(2, round(d/2)) -> d, ReLU
  after the first two, linear bottleneck and output (see :func:`dense_converter`). Images: C*H*W -> 512 -> 256
  -> 64 -> C*H*W, ReLU after the first three, sigmoid output in [0, 1] pixel units, re-standardized in the graph
  so g's output lives where the prototypes do.
- classifier f: tables: d -> 32 -> K (ReLU); images: conv1 + exit-1 branch of B-LeNet (BranchyNet
  ``networks/lenet_mnist.py``, Chainer max-pool = ``MaxPool2d(2, ceil_mode=True)``) with K outputs.
- :class:`NearestPrototype`: ArgMin of the MatMul-form squared distances to the prototype constants, then the
  exact per-feature residual to the chosen prototype.
- declared FP32 for the INT8 variant: NearestPrototype, and g (tables) or g's output layer (images).

The scoring graph has no control flow: g -> distances -> ArgMin -> f -> softmax entropy -> weighted sum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: the dense prototype converter of the co-author code (one point of its grid: 512/256/64, ReLU)
IMAGE_WIDTHS = (512, 256, 64)


def converter_widths(d: int, image: bool) -> list[int]:
    """Layer widths of g from input to output."""
    if image:
        return [d, *IMAGE_WIDTHS, d]
    return [d, 2 * d, d, max(2, round(d / 2)), d]


def dense_converter(widths: list[int], relu_bottleneck: bool) -> tuple[nn.Sequential, nn.Sequential]:
    """Encoder (every layer but the last, ReLU after each; after the bottleneck only if ``relu_bottleneck``)
    and the output layer of g (linear; the image sigmoid is applied by :class:`CBNet`).

    Tables get a linear bottleneck: the spec's "(ReLU, linear output)" does not say whether the max(2, d/2)-unit
    code is rectified, and a rectified 2-3 unit code dies on small tables (measured on three Gaussian classes in
    5-d: one of its 2 units dead, g mapped two classes onto one prototype whatever the number of steps)."""
    enc: list[nn.Module] = []
    pairs = list(zip(widths[:-2], widths[1:-1]))
    for i, (a, b) in enumerate(pairs):
        enc.append(nn.Linear(a, b))
        if relu_bottleneck or i < len(pairs) - 1:
            enc.append(nn.ReLU())
    return nn.Sequential(*enc), nn.Sequential(nn.Linear(widths[-2], widths[-1]))


def tabular_classifier(d: int, n_outputs: int, hidden: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))


class BranchClassifier(nn.Module):
    """B-LeNet conv1 + exit-1 branch: Conv(C->5, k5, pad3) -> MaxPool2 -> ReLU -> Conv(5->10, k3, pad1) -> MaxPool2
    -> ReLU -> Linear(-> K); on 28x28 inputs the flattened size is 640, as in BranchyNet."""

    def __init__(self, image_shape: tuple[int, int, int], n_outputs: int) -> None:
        super().__init__()
        channels = int(image_shape[0])
        self.features = nn.Sequential(
            nn.Conv2d(channels, 5, kernel_size=5, padding=3), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(),
            nn.Conv2d(5, 10, kernel_size=3, padding=1), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *image_shape)).shape[1]
        self.head = nn.Linear(int(flat), n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class NearestPrototype(nn.Module):
    """Nearest prototype of converted rows: ArgMin over ``||y||^2 - 2 y R^T + ||r||^2`` (``||r||^2`` a constant),
    then the exact residual ``(y - r_c*)^2`` (no cancellation error, so it sums to s_conv exactly) and the class
    code of that prototype. FP32 in the INT8 variant: rounding would change which prototype is nearest."""

    keep_fp32 = True

    def __init__(self, prototypes: np.ndarray, prototype_class: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("prototypes", torch.as_tensor(prototypes, dtype=torch.float32))
        self.register_buffer("prototypes_sq", (self.prototypes ** 2).sum(dim=1))
        self.register_buffer("prototype_class", torch.as_tensor(prototype_class, dtype=torch.int64))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual ``(y - r_c*)^2``, the class code of c* and the prototype row r_c* itself."""
        d2 = (y ** 2).sum(dim=1, keepdim=True) - 2.0 * y @ self.prototypes.T + self.prototypes_sq
        nearest = torch.argmin(d2, dim=1)
        chosen = self.prototypes[nearest]
        return (y - chosen) ** 2, self.prototype_class[nearest], chosen


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy ``-sum_c p_c log p_c`` (natural log), from log-softmax for stability."""
    logp = torch.log_softmax(logits, dim=1)
    return -(torch.exp(logp) * logp).sum(dim=1)


class CBNet(nn.Module):
    """Converter g, classifier f, prototypes and the two component scales (buffers, hence graph constants).

    ``input_shape`` is one standardized row's shape: (d,) for tables, (C, H, W) for images (g then works on
    the flattened pixels and f on the (C, H, W) view of g's output). For images, ``pixel_mean`` /
    ``pixel_scale`` (per flattened pixel, from the per-channel standardization) map g's sigmoid output in
    [0, 1] back to standardized units.
    """

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int, pixel_mean: np.ndarray | None = None,
                 pixel_scale: np.ndarray | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.image = len(self.input_shape) == 3
        d = int(np.prod(self.input_shape))
        self.encoder, self.output = dense_converter(converter_widths(d, self.image), relu_bottleneck=self.image)
        # FP32 in the INT8 variant: what s_conv measures is g's output against constants, at fine resolution.
        # Tables: all of g (a near-constant g leaves normal rows' s_conv ~1e-3, below INT8 rounding: measured on
        # thyroid, INT8 g flipped 35 % of the labels and cost 0.053 ROC-AUC; INT8 buys a tiny table graph little).
        # Images: g's output layer (labels 93 -> 99 % equal on digits; the wide encoder keeps INT8's 0.28x size).
        self.output.keep_fp32 = True
        self.encoder.keep_fp32 = not self.image
        self.classifier: nn.Module = (BranchClassifier(self.input_shape, n_outputs) if self.image
                                      else tabular_classifier(d, n_outputs))
        if self.image:
            self.register_buffer("pixel_mean", torch.as_tensor(pixel_mean, dtype=torch.float32))
            self.register_buffer("pixel_scale", torch.as_tensor(pixel_scale, dtype=torch.float32))
        # score = sum_k w_k * s_k / scale_k over (s_conv, s_ent, s_input); set after training
        self.register_buffer("weights", torch.ones(3))
        self.register_buffer("scales", torch.ones(3))
        self.nearest: NearestPrototype | None = None
        self._register_load_state_dict_pre_hook(self._make_nearest)

    def _make_nearest(self, state: dict, prefix: str, *args: object) -> None:
        """Weights saved after training (the training cache) hold the prototypes, which the network only gets
        when its conversion stage starts: create the module they load into."""
        if self.nearest is None and f"{prefix}nearest.prototypes" in state:
            self.nearest = NearestPrototype(state[f"{prefix}nearest.prototypes"].numpy(),
                                            state[f"{prefix}nearest.prototype_class"].numpy())

    def converter_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.output.parameters()]

    def pre_output(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g's last pre-activation and its bottleneck activations (for the images' L1 activity penalty)."""
        code = self.encoder(z.flatten(1))
        return self.output(code), code

    def convert(self, z: torch.Tensor) -> torch.Tensor:
        """g(z) as flat standardized rows (B, d)."""
        out, _ = self.pre_output(z)
        if self.image:
            return (torch.sigmoid(out) - self.pixel_mean) / self.pixel_scale
        return out

    def classify(self, rows: torch.Tensor) -> torch.Tensor:
        """f's logits on standardized rows (flat or (C, H, W))."""
        return self.classifier(rows.reshape(-1, *self.input_shape) if self.image else rows)

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """CBNet-style score; ``target`` is unused (g's target is a prototype, not the input: no MSS).

        ``s_input = ||z - r_c*||^2`` is the standardized input's distance to the prototype g converts it onto
        (c* = argmin_c ||g(z) - r_c||^2): how far the conversion had to move the row. ``contrib`` sums the
        weighted per-feature residuals of s_conv and s_input and spreads s_ent evenly, so it sums to ``score``."""
        y = self.convert(z)
        if self.nearest is None:  # before the prototypes exist (the graph probe of an unfitted model)
            residual, cls, chosen = torch.zeros_like(y), torch.zeros(y.shape[0], dtype=torch.int64), y
        else:
            residual, cls, chosen = self.nearest(y)
        moved = (z.flatten(1) - chosen) ** 2
        s_conv, s_input = residual.sum(dim=1), moved.sum(dim=1)
        s_ent = entropy(self.classify(y))
        unit = self.weights / self.scales
        ent_part = unit[1] * s_ent
        contrib = residual * unit[0] + moved * unit[2] + (ent_part / y.shape[1])[:, None]
        return {"score": unit[0] * s_conv + ent_part + unit[2] * s_input, "contrib": contrib, "class": cls,
                "s_conv": s_conv, "s_ent": s_ent, "s_input": s_input}
