"""`ae`: the plain MLP autoencoder with the MSE score, the baseline every spec compares with."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from aeguard.core.deep import DeepDetector, FitData, adam
from aeguard.core.params import TRAINING_SPEC, Spec
from aeguard.plugins.ae.torch_model import AutoEncoder


class AEDetector(DeepDetector):
    """MLP autoencoder trained with MSE (Adam, StepLR(1000, 0.5) per epoch, full batch).

    ``explain`` gives per-feature squared errors in standardized units; they sum to the score.
    """

    #: types and ranges of the hyperparameters (aeguard.core.params); the rest follow from the signature
    param_spec: ClassVar[dict[str, Spec]] = dict(TRAINING_SPEC)
    #: images go through the flattened path, standardized per channel (aeguard.core.deep.ImageStandardize)
    modalities: ClassVar[tuple[str, ...]] = ("tabular", "image")

    def __init__(self, epochs: int = 500, lr: float = 1e-3, batch_size: int | None = None,
                 val_fraction: float = 0.0, early_stopping: int | None = None, epochs_per_step: int = 50,
                 contamination: Any = 0.1, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.early_stopping = early_stopping
        self.epochs_per_step = epochs_per_step
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose


    def build_model(self, data: FitData) -> nn.Module:
        return AutoEncoder(data.n_features)

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return ((model(z) - z) ** 2).sum(dim=1).mean()

    def configure_optimizer(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        optimizer = adam(model.parameters(), lr=self.lr)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1000, gamma=0.5)
