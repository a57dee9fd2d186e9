"""`example-staged`: a third-party deep detector that uses every core-v2 capability at once (a test fixture).

- data-aware construction: ``prepare`` measures the training rows' per-feature medians, which ``build_model``
  puts into the graph as a constant (the reconstruction is of ``z - median``);
- two training stages: ``reconstruct`` trains encoder + decoder with the class head frozen, ``classify`` trains
  only the head on (rows, class codes) with the autoencoder frozen (skipped without classes);
- class labels: ``accepts_classes = True``; the head's argmax is the integer component ``class``;
- a reference set: latent codes of at most ``ref_cap`` training rows (``core.reference.draw_reference``), the
  distance to the nearest one is the component ``nn_dist``; fit rows in the reference leave themselves out;
- an FP32-declared node: the nearest-code module sets ``keep_fp32 = True`` (INT8 keeps it float).

Score = squared reconstruction error (``contrib`` per feature) + ``nn_dist`` spread evenly over the features.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.deep import DeepDetector, FitData, Stage
from aeguard.core.params import TRAINING_SPEC, Int, Spec
from aeguard.core.reference import ReferenceDraw, draw_reference


class NearestCode(nn.Module):
    """Distance of each code to its nearest reference code (squared, float32); declared FP32 for INT8."""

    keep_fp32 = True

    def __init__(self, refs: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("refs", torch.as_tensor(refs, dtype=torch.float32))
        self.register_buffer("refs_sq", (self.refs ** 2).sum(dim=1))

    def distances(self, code: torch.Tensor) -> torch.Tensor:
        d2 = (code ** 2).sum(dim=1, keepdim=True) - 2.0 * code @ self.refs.T + self.refs_sq
        return torch.clamp(d2, min=0.0)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.distances(code).min(dim=1).values


class StagedNet(nn.Module):
    def __init__(self, n_features: int, latent: int, n_classes: int, median: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("median", torch.as_tensor(median, dtype=torch.float32))
        self.encoder = nn.Sequential(nn.Linear(n_features, latent), nn.Tanh())
        self.decoder = nn.Linear(latent, n_features)
        self.head = nn.Linear(latent, max(1, n_classes))
        self.nearest: NearestCode | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(z - self.median)) + self.median

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        code = self.encoder(z - self.median)
        contrib = (self.decoder(code) + self.median - target) ** 2
        nn_dist = self.nearest(code) if self.nearest is not None else torch.zeros_like(contrib[:, 0])
        contrib = contrib + nn_dist[:, None] / contrib.shape[1]
        return {"score": contrib.sum(dim=1), "contrib": contrib, "nn_dist": nn_dist,
                "class": torch.argmax(self.head(code), dim=1)}


class StagedDetector(DeepDetector):
    """Example of a multi-stage deep plugin (see the module docstring)."""

    accepts_classes = True
    #: types and ranges of the hyperparameters (aeguard.core.params), checked by --param, specs and fit
    param_spec: ClassVar[dict[str, Spec]] = {**TRAINING_SPEC, "latent": Int(low=1), "head_epochs": Int(low=0),
                                             "ref_cap": Int(low=2)}

    def __init__(self, latent: int = 3, epochs: int = 60, head_epochs: int = 30, lr: float = 1e-2,
                 ref_cap: int = 64, val_fraction: float = 0.2, epochs_per_step: int = 10,
                 contamination: Any = 0.1, random_state: int | None = None, device: str = "auto",
                 verbose: bool = False) -> None:
        self.latent = latent
        self.epochs = epochs
        self.head_epochs = head_epochs
        self.lr = lr
        self.ref_cap = ref_cap
        self.val_fraction = val_fraction
        self.epochs_per_step = epochs_per_step
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def prepare(self, data: FitData) -> None:
        self.median_ = np.median(data.z_train, axis=0)

    def build_model(self, data: FitData) -> nn.Module:
        return StagedNet(data.n_features, self.latent, data.n_classes, self.median_)

    def training_loss(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return ((model(z) - z) ** 2).sum(dim=1).mean()

    def stages(self, model: nn.Module, data: FitData) -> list[Stage]:
        autoencoder = lambda m: [*m.encoder.parameters(), *m.decoder.parameters()]  # noqa: E731
        stages = [Stage(name="reconstruct", loss=self.training_loss, parameters=autoencoder, epochs=self.epochs,
                        lr=self.lr, epochs_per_step=self.epochs_per_step, patience=self.epochs, restore_best=True)]
        if data.classes is not None:
            def classify(m: nn.Module, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                return nn.functional.cross_entropy(m.head(m.encoder(z - m.median)), c)

            stages.append(Stage(name="classify", loss=classify, parameters=lambda m: m.head.parameters(),
                                tensors=lambda d: (d.z_train, d.classes_train), epochs=self.head_epochs,
                                lr=self.lr, epochs_per_step=self.epochs_per_step))
        return stages

    def fit_after_training(self, model: nn.Module, data: FitData) -> None:
        self.reference_: ReferenceDraw = draw_reference(len(data.train_idx), self.latent, cap_rows=self.ref_cap,
                                                        seed=data.seed)
        codes = model.encoder(torch.from_numpy(data.z_train) - model.median).numpy()
        model.nearest = NearestCode(self.reference_.take(codes))

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        """Fit rows that are reference rows leave themselves out (else they would score distance 0)."""
        scores = self._score(X).score
        own = np.full(len(X), -1, dtype=np.int64)
        train_idx = np.arange(len(X)) if not self.split_["n_val"] else self._train_rows
        own[train_idx] = self.reference_.own_rows()
        mine = np.flatnonzero(own >= 0)
        if len(mine):
            with torch.no_grad():
                z = self.standardize_(torch.from_numpy(X[mine].astype(np.float32)))
                code = self.model_.encoder(z - self.model_.median)
                d2 = self.model_.nearest.distances(code)
                d2[torch.arange(len(mine)), torch.from_numpy(own[mine])] = torch.inf
                fixed = d2.min(dim=1).values.numpy().astype(np.float64)
                scores[mine] += fixed - self._score(X[mine]).components["nn_dist"]
        return scores

    def _train(self, model: nn.Module, data: FitData) -> dict[str, Any]:
        self._train_rows = data.train_idx
        return super()._train(model, data)

    def manifest_extra(self) -> dict[str, Any]:
        return {**super().manifest_extra(), "reference": self.reference_.manifest()}
