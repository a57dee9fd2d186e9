"""Deep ensembles for every :class:`~aeguard.core.deep.DeepDetector`: ``n_members`` networks, one graph.

Why: a single deep detector's ROC-AUC moves a lot with its initialisation (``apre``: seed std 0.095 over the
ODDS sets against 0.02-0.03 for the baselines), and most of the loss is members that fail badly on one seed.
Averaging members over initialisations (RandNet, Chen et al. 2017; ROBOD, Ding, Zhao and Akoglu 2022) cancels
those failures. The base does it for every deep plugin; no plugin writes anything.

How, in four steps (``DeepDetector._fit``):

1. **Members.** Member 0 is built exactly as the single model (same seed, same draw); member ``i >= 1`` is built
   after ``torch.manual_seed(member_seed(seed, i))``. The data, split and ``prepare`` statistics are shared.
2. **Training together** (:func:`train_members`). When every stage trains on the default tensors and has no
   per-step hooks, the members train as one vectorised model: each parameter is stacked to ``(M, ...)``
   (``torch.func.stack_module_state``), the stage's own loss runs per member under ``torch.func.vmap`` +
   ``functional_call`` and the member losses are summed, so each member gets exactly its own gradient
   (Adam is element-wise: stacked Adam = M independent Adams). One Lightning fit per stage, as for one model.
   Early stopping: the stage stops when the **mean** member validation loss has not improved for ``patience``
   epochs; with ``restore_best`` each member gets back its **own** best weights (its own lowest validation
   loss). Waiting for every member instead (per-member stopping) runs to the slowest of the five.
   A stage that builds its own tensors from the model or has ``after_backward``/``after_step`` hooks cannot be
   batched that way: its members are trained one after the other (same result per member, M times the cost),
   recorded as ``training: "sequential"`` in the manifest.
3. **Common scale.** After ``fit_after_training`` and ``make_target`` per member (a mean-shift target depends on
   the data and seed only, so it is computed once and shared), member ``i``'s fit-set scores give a centre
   ``c_i`` (median) and a scale ``s_i`` (1.4826 x MAD; the standard deviation if the MAD is 0, else 1).
4. **One graph** (:class:`EnsembleModel`): ``score = mean_i (score_i - c_i) / s_i``,
   ``contrib_j = mean_i (contrib_ij - c_i / d) / s_i`` (so ``explain`` rows still sum to the score), float
   components ``mean_i comp_i / s_i`` (the same map without the centre, which belongs to the score), integer
   components (a predicted class) from member 0. Exported as one ONNX graph; serving and edge see one model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

#: 1.4826 x MAD estimates the standard deviation of a normal distribution
MAD_TO_STD = 1.4826
#: rows scored at once when measuring the fit-set scales (bounds the memory of large or image fit sets)
SCALE_ROWS = 4096


def member_seed(seed: int, index: int) -> int:
    """Seed of member ``index`` (member 0 is the fit seed itself, so it is the single model's network)."""
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] % (2**31 - 1))


def check_n_members(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"n_members must be an int >= 1, got {value!r}")
    return int(value)


def robust_center_scale(scores: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD of a member's fit-set scores (std if the MAD is 0; 1 if both are)."""
    s = np.asarray(scores, dtype=np.float64)
    center = float(np.median(s))
    scale = MAD_TO_STD * float(np.median(np.abs(s - center)))
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(center)):
        scale = float(np.std(s))
        if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(center)):
            scale = 1.0
    return center, scale


class Members(nn.ModuleList):
    """The member networks while they train: a plain ``ModuleList`` so its state dict (cache, history) holds
    every member, and a type the base's ``_train`` recognises."""


class EnsembleModel(nn.Module):
    """The members behind one ``score_against(z, t)``: each member scored against the shared target, put on
    the common scale of its own fit-set statistics, then averaged (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module], centers: Sequence[float], scales: Sequence[float],
                 n_contrib: int) -> None:
        super().__init__()
        if len(members) != len(centers) or len(members) != len(scales):
            raise ValueError("one centre and one scale per member")
        self.members = nn.ModuleList(members)
        self.n_members = len(self.members)
        self.n_contrib = int(n_contrib)
        self.register_buffer("center", torch.tensor([float(c) for c in centers], dtype=torch.float32))
        self.register_buffer("inv_scale", torch.tensor([1.0 / float(s) for s in scales], dtype=torch.float32))

    def score_against(self, z: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = [member.score_against(z, target) for member in self.members]
        combined: dict[str, torch.Tensor] = {}
        for name in outs[0]:
            if name == "score":
                parts = [(o[name] - self.center[i]) * self.inv_scale[i] for i, o in enumerate(outs)]
            elif name == "contrib":
                parts = [(o[name] - self.center[i] / self.n_contrib) * self.inv_scale[i] for i, o in enumerate(outs)]
            elif not outs[0][name].is_floating_point():
                combined[name] = outs[0][name]  # a class or index: member 0's, averaging would mean nothing
                continue
            else:
                parts = [o[name] * self.inv_scale[i] for i, o in enumerate(outs)]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            combined[name] = total / self.n_members
        return combined


def fit_scales(members: Sequence[nn.Module], z: np.ndarray,
               targets: np.ndarray | None) -> tuple[list[float], list[float], int]:
    """Per member: median and robust scale of its scores on every fit row (against the fit-set targets)."""
    centers, scales, n_contrib = [], [], 0
    for member in members:
        parts = []
        with torch.no_grad():
            for start in range(0, len(z), SCALE_ROWS):
                zb = torch.from_numpy(np.ascontiguousarray(z[start:start + SCALE_ROWS], dtype=np.float32))
                tb = zb if targets is None else torch.from_numpy(
                    np.ascontiguousarray(targets[start:start + SCALE_ROWS], dtype=np.float32))
                out = member.score_against(zb, tb)
                parts.append(out["score"].double().numpy())
                n_contrib = int(np.prod(out["contrib"].shape[1:]))
        c, s = robust_center_scale(np.concatenate(parts))
        centers.append(c)
        scales.append(s)
    return centers, scales, n_contrib


# --- vectorised training --------------------------------------------------------------------------------


class _LossCall(nn.Module):
    """``fn(model, *tensors)`` as a module, so ``functional_call`` can swap the model's parameters for one
    member's slices while the plugin's own loss runs."""

    def __init__(self, model: nn.Module, fn: Any) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, *tensors)


def _set_param(module: nn.Module, name: str, value: nn.Parameter) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    setattr(owner, leaf, value)


def vectorisable(stages: Sequence[Any], members: Sequence[nn.Module]) -> str | None:
    """Why these stages cannot train the members as one batched model (None: they can)."""
    for stage in stages:
        if stage.tensors is not None or stage.val_tensors is not None:
            return f"stage {stage.name!r} builds its own tensors"
        if stage.after_backward is not None or stage.after_step is not None:
            return f"stage {stage.name!r} has per-step hooks"
    first = dict(members[0].named_buffers())
    for member in members[1:]:
        buffers = dict(member.named_buffers())
        if buffers.keys() != first.keys() or any(not torch.equal(buffers[k], first[k]) for k in first):
            return "the members' buffers differ"
        if [n for n, _ in member.named_parameters()] != [n for n, _ in members[0].named_parameters()]:
            return "the members' parameters differ in structure"
    return None


def _vectorised_stage(stage: Any, template: nn.Module, names: list[str], n_members: int) -> Any:
    """A copy of ``stage`` whose loss is the sum of the member losses (vmapped) and whose validation loss is the
    vector of member losses (per-member early stopping)."""
    import dataclasses

    from torch.func import functional_call, vmap

    def batched(fn: Any) -> Any:
        wrapper = _LossCall(template, fn)

        def member_loss(params: dict[str, torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
            return functional_call(wrapper, {f"model.{k}": v for k, v in params.items()}, tensors, strict=False)

        def losses(model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
            params = {n: p for n, p in model.named_parameters() if n in names}
            in_dims = ({n: 0 for n in params}, *([None] * len(tensors)))
            return vmap(member_loss, in_dims=in_dims, randomness="different")(params, *tensors)

        return losses

    train_losses = batched(stage.loss)
    val_losses = batched(stage.val_loss or stage.loss)
    return dataclasses.replace(stage, loss=lambda m, *t: train_losses(m, *t).sum(), val_loss=val_losses,
                               members=n_members)


def train_members(detector: Any, members: Members, data: Any) -> dict[str, Any]:
    """Train the members in place: vectorised when the stages allow it, else one after the other."""
    from aeguard.core.training import train_stages

    started = time.perf_counter()
    n = len(members)
    template = members[0]
    stages = detector.stages(template, data)
    why_not = vectorisable(stages, members)
    if why_not is not None:
        histories = [train_stages(detector, template, stages, data)]
        histories += [train_stages(detector, m, detector.stages(m, data), data) for m in members[1:]]
        return {**histories[0], "train_seconds": round(time.perf_counter() - started, 4),
                "epochs_run": [h["epochs_run"] for h in histories],
                "ensemble": {"n_members": n, "training": "sequential", "why": why_not,
                             "members": [{k: h.get(k) for k in ("epochs_run", "stopped_early", "best_epoch")}
                                         for h in histories]}}
    from torch.func import stack_module_state

    stacked, _ = stack_module_state(list(members))
    names = [name for name, _ in template.named_parameters()]
    originals = dict(template.named_parameters())
    for name in names:
        _set_param(template, name, nn.Parameter(stacked[name].detach().clone(),
                                                requires_grad=originals[name].requires_grad))
    try:
        history = train_stages(detector, template, [_vectorised_stage(s, template, names, n) for s in stages], data)
    finally:
        trained = {name: p.detach().clone() for name, p in template.named_parameters()}
        for name in names:
            _set_param(template, name, nn.Parameter(trained[name][0].clone(),
                                                    requires_grad=originals[name].requires_grad))
    for i, member in enumerate(members):
        if i == 0:
            continue
        with torch.no_grad():
            for name, p in member.named_parameters():
                p.copy_(trained[name][i])
    history["ensemble"] = {"n_members": n, "training": "vectorised",
                           "early_stopping": "on the mean member validation loss; best weights restored per "
                                             "member (each at its own lowest validation loss)"}
    return history
