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

**Subsampled members** (``member_subsample`` < 1; subsampling ensembles, Zimek, Gaudet, Campello and Sander,
KDD 2013): each member of a vectorised group trains on its own sample of the training rows
(:func:`member_subsets`), so members differ in their data too and the stacked epoch does a fraction of the
arithmetic: ``member_subsample = 1 / n_members`` costs about one model's rows in all. Member 0 is then not the
single model. The hold-out, the fit-set scales and the threshold use every row; stages that cannot be stacked
refuse it.

**Hyperparameter grid** (``member_grid``, ROBOD-style: Ding, Zhao and Akoglu, NeurIPS 2022). Members may also
differ in the detector's own constructor parameters, all label-free: ``member_grid="lr:1e-3|3e-3;latent:4|8"``
(or ``{"lr": [1e-3, 3e-3], "latent": [4, 8]}``). The combinations are the Cartesian product in the order the
names are written, the last name varying fastest (``itertools.product``); member ``i`` takes combination
``i mod K`` (cycling when ``n_members > K``), so member 0 takes the first values of every name, not the detector's
own (it is the single model only when those are the same). :func:`member_overrides` checks the grid against the
class; :func:`member_view` puts one member's values on the detector while that member's ``build_model``,
``stages``, training, ``fit_after_training`` and ``make_target`` run. Why the detector itself and not a copy: the
plugin hooks keep storing their fitted state where they always do (the last member's, as without a grid) and
memos shared by the members (the mean shift's) stay shared; the values are put back afterwards, even on error.
What members share is refused: the split, seed and device, the scoring (``scoring_params``, ``contamination``),
``n_members``/``member_grid`` themselves, and, checked on the data at ``fit``, any value that changes what the
class's ``prepare`` computes. Members are trained in groups (:func:`training_groups`): equal values and equal
parameter structure train as one vectorised model; members that differ only in ``lr`` still do, each member's
update scaled by its own learning rate over the group's (exact for optimisers whose step is linear in ``lr``,
checked on each member's own optimiser and schedule); anything else (a width, epochs, a loss setting) trains in
its own group, one group after the other. The manifest records every member's values and the groups.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import time
import warnings
from collections.abc import Iterator, Sequence
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
    every member, and a type the base's ``_train`` recognises; ``overrides`` are each member's grid values."""

    def __init__(self, modules: Sequence[nn.Module], overrides: Sequence[dict[str, Any]] | None = None) -> None:
        super().__init__(modules)
        self.overrides = [dict(o) for o in overrides] if overrides is not None else [{} for _ in modules]
        if len(self.overrides) != len(self):
            raise ValueError("one override set per member")


# --- the hyperparameter grid ------------------------------------------------------------------------------


def member_overrides(detector: Any, entries: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """Each member's values of the detector's ``member_grid`` (``[{}, ...]`` without a grid), checked against
    its class: every name a constructor parameter members may differ in, every value valid by that parameter's
    own spec, ``n_members >= 2``. Raises :class:`~aeguard.core.params.ParamError` naming ``member_grid`` and
    the entry."""
    from aeguard.core.params import ParamError, grid_entries, param_specs

    n = check_n_members(detector.n_members)
    if float(getattr(detector, "member_subsample", 1.0)) < 1.0 and n < 2:
        raise ParamError(f"member_subsample={detector.member_subsample!r} needs n_members >= 2 (got n_members={n}): "
                         "it draws each member of an ensemble its own sample of the training rows")
    entries = grid_entries(detector.member_grid) if entries is None else entries
    if not entries:
        return [{} for _ in range(n)]
    if n < 2:
        raise ParamError(f"member_grid {detector.member_grid!r} needs n_members >= 2 (got n_members={n}): the "
                         "grid gives each member of an ensemble its own values")
    cls = type(detector)
    specs = param_specs(cls)
    scoring = cls._scoring_params()
    typed: dict[str, list[Any]] = {}
    for name, values in entries.items():
        entry = f"{name}:{'|'.join(map(str, values))}"
        if name not in specs:
            valid = sorted(n for n in specs if n not in cls.member_shared_params and n not in scoring)
            raise ParamError(f"member_grid entry {entry!r}: {name!r} is not a parameter of {cls.__name__}; "
                             f"members may differ in: {', '.join(valid)}")
        if name in cls.member_shared_params:
            raise ParamError(f"member_grid entry {entry!r}: {name} {cls.member_shared_params[name]}")
        if name in scoring:
            raise ParamError(f"member_grid entry {entry!r}: {name} is a scoring parameter of {cls.__name__} "
                             "(scoring_params); the members must score alike so that one graph combines them")
        if getattr(detector, "faithful", False) and name in cls.faithful_settings:
            raise ParamError(f"member_grid entry {entry!r}: with faithful=True, {cls.__name__} imposes "
                             f"{name}={cls.faithful_settings[name]!r}, so the grid would have no effect")
        try:
            typed[name] = [specs[name].parse(name, value) for value in values]
        except ValueError as exc:
            raise ParamError(f"member_grid entry {entry!r}: {exc}") from None
    combos = list(itertools.product(*typed.values()))
    return [dict(zip(typed, combos[i % len(combos)])) for i in range(n)]


@contextlib.contextmanager
def member_view(detector: Any, overrides: dict[str, Any]) -> Iterator[Any]:
    """The detector with one member's grid values set, put back on exit (see the module docstring for why
    the detector itself rather than a copy)."""
    saved = {name: getattr(detector, name) for name in overrides}
    for name, value in overrides.items():
        setattr(detector, name, value)
    try:
        yield detector
    finally:
        for name, value in saved.items():
            setattr(detector, name, value)


def same_value(a: Any, b: Any) -> bool:
    """Equality of fitted state (arrays, tensors, containers, scalars), for the shared-``prepare`` check."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object without a usable ==: equal only to itself
        return a is b


def check_shared_prepare(detector: Any, data: Any, overrides: Sequence[dict[str, Any]]) -> None:
    """Refuse grid values that change what the class's ``prepare`` computes: the members share one ``prepare``
    (its statistics are computed once, before the members exist). Each grid value is tried alone on the
    detector's own ``prepare`` and the state it leaves is compared with the shared one; the detector's state
    and the random number generators are put back afterwards."""
    from aeguard.core.params import ParamError

    values: dict[str, list[Any]] = {}
    for member in overrides:
        for name, value in member.items():
            if not any(same_value(value, seen) for seen in values.setdefault(name, [])):
                values[name].append(value)
    shared = dict(detector.__dict__)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    try:
        for name, tried in values.items():
            for value in tried:
                if same_value(value, shared.get(name)):
                    continue
                with member_view(detector, {name: value}):
                    detector.prepare(data)
                changed = sorted(k for k, v in detector.__dict__.items()
                                 if k != name and (k not in shared or not same_value(v, shared[k])))
                detector.__dict__.clear()
                detector.__dict__.update(shared)
                if changed:
                    raise ParamError(f"member_grid entry '{name}:{value}': {name}={value!r} changes what "
                                     f"{type(detector).__name__}.prepare computes ({', '.join(changed)}), which "
                                     "the members share; keep it out of the grid")
    finally:
        detector.__dict__.clear()
        detector.__dict__.update(shared)
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)


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


#: optimisers whose step is linear in the learning rate at a given state (``lr`` times a function of the
#: gradients and of lr-free state: moments, accumulators, momentum buffers, a decoupled decay ``lr * wd * p``), so
#: one stacked optimiser run with the group's lr, each member's update then scaled by its own lr over that lr,
#: is each member's own optimiser. Exact classes only: a subclass may step differently.
LINEAR_IN_LR: tuple[type, ...] = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax,
                                  torch.optim.Adadelta, torch.optim.Adagrad, torch.optim.RMSprop, torch.optim.NAdam,
                                  torch.optim.RAdam)


def _lr_scaling_hooks(factors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``after_backward``/``after_step`` hooks that turn the stacked step with the group's lr into each member's
    step with its own: ``p = p_before + factor_i * (p_after - p_before)`` on member ``i``'s rows."""
    before: dict[str, torch.Tensor] = {}
    placed: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def snapshot(model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in factors:
                before[name] = p.detach().clone()

    def rescale(model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in factors:
                key = (name, p.device, p.dtype)
                if key not in placed:
                    placed[key] = factors[name].to(device=p.device, dtype=p.dtype).reshape(-1, *([1] * (p.dim() - 1)))
                p.copy_(before[name] + placed[key] * (p - before[name]))

    return {"after_backward": snapshot, "after_step": rescale}


def member_subsets(detector: Any, data: Any, members: Sequence[int]) -> np.ndarray | None:
    """Row indices into the training rows, one sorted row sample per member (``(len(members), size)``), when
    ``member_subsample`` < 1; None when every member trains on every row.

    Why: members that each train on their own sample of the rows (subsampling ensembles: Zimek, Gaudet,
    Campello and Sander, KDD 2013) differ in their data as well as their initialisation, and a stacked
    epoch then costs what ``member_subsample x n_members`` epochs of one model cost, so 5 members at 0.2
    train in about the time of one (the arithmetic is per row; 5 members on every row cost 3-4x one on CPU).
    Member ``i``'s sample is drawn without replacement by ``numpy.random.default_rng(member_seed(seed, i))``;
    the hold-out rows, the fit-set scales and the threshold still use every row."""
    fraction = float(getattr(detector, "member_subsample", 1.0))
    n = len(data.train_idx)
    size = max(1, int(round(fraction * n)))
    if fraction >= 1.0 or size >= n:
        return None
    return np.stack([np.sort(np.random.default_rng(member_seed(data.seed, i)).choice(n, size, replace=False))
                     for i in members])


def _vectorised_stage(stage: Any, template: nn.Module, names: list[str], n_members: int,
                      lr_factors: dict[str, torch.Tensor] | None = None, subsets: np.ndarray | None = None) -> Any:
    """A copy of ``stage`` whose loss is the sum of the member losses (vmapped) and whose validation loss is the
    vector of member losses (per-member early stopping); ``lr_factors`` (parameter name -> one factor per
    member) scale each member's update to its own learning rate; ``subsets`` (one row sample per member,
    :func:`member_subsets`) give each member its own training rows: the stage's tensors are then stacked on
    a second axis, ``(rows, members, ...)``, so mini-batches still cut the first, and each member's loss sees
    only its own column. Validation always runs every member on the shared hold-out."""
    from torch.func import functional_call, vmap

    def batched(fn: Any, own_rows: bool) -> Any:
        wrapper = _LossCall(template, fn)

        def member_loss(params: dict[str, torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
            return functional_call(wrapper, {f"model.{k}": v for k, v in params.items()}, tensors, strict=False)

        def losses(model: nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
            params = {n: p for n, p in model.named_parameters() if n in names}
            if own_rows:
                tensors = tuple(t.movedim(1, 0) for t in tensors)
            in_dims = ({n: 0 for n in params}, *([0 if own_rows else None] * len(tensors)))
            return vmap(member_loss, in_dims=in_dims, randomness="different")(params, *tensors)

        return losses

    train_losses = batched(stage.loss, own_rows=subsets is not None)
    val_losses = batched(stage.val_loss or stage.loss, own_rows=False)
    hooks = _lr_scaling_hooks(lr_factors) if lr_factors else {}
    rows: dict[str, Any] = {}
    if subsets is not None:
        def own_tensors(data: Any) -> tuple[np.ndarray, ...]:
            return tuple(np.stack([a[idx] for idx in subsets], axis=1) for a in stage.train_arrays(data))

        rows = {"tensors": own_tensors, "val_tensors": stage.val_arrays}
    return dataclasses.replace(stage, loss=lambda m, *t: train_losses(m, *t).sum(), val_loss=val_losses,
                               members=n_members, **hooks, **rows)


# --- training groups --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Group:
    """Members trained together: ``lr_scales[stage][k][g]`` is member ``members[k]``'s learning rate over the
    first member's in optimiser group ``g`` of that stage (None: all members have the same values), and
    ``lr_groups[stage][g]`` the parameter names of that optimiser group."""

    members: list[int]
    lr_scales: list[list[list[float]]] | None = None
    lr_groups: list[list[list[str]]] | None = None


#: the stage settings members of one vectorised group must share (the learning rate may differ, see Group)
_STAGE_FIELDS = ("name", "epochs", "batch_size", "patience", "val_every", "restore_best", "epochs_per_step")


def _structure(model: nn.Module) -> tuple[Any, ...]:
    return (tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()),
            tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers()))


def _schedule(stage: Any, model: nn.Module) -> dict[str, Any] | None:
    """The optimiser this member's stage builds (on the member's own parameters; never stepped): its class, its
    scheduler's class, every group's settings but the lr with its parameter names, and every group's lr at
    each of the stage's epochs. None when its step is not known to be linear in the lr."""
    names = {id(p): n for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": nothing is trained here
        optimizer, scheduler = stage.optimizer(stage.trainable(model), stage)
        if type(optimizer) not in LINEAR_IN_LR:
            return None
        groups = [([names.get(id(p)) for p in g["params"]],
                   {k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")})
                  for g in optimizer.param_groups]
        lrs = [[float(g["lr"]) for g in optimizer.param_groups]]
        if scheduler is not None:
            try:
                for _ in range(int(stage.epochs) - 1):
                    scheduler.step()
                    lrs.append([float(g["lr"]) for g in optimizer.param_groups])
            except Exception:  # noqa: BLE001 - a scheduler that needs a metric (plateau): not predictable here
                return None
    return {"optimizer": type(optimizer), "scheduler": type(scheduler), "groups": groups, "lrs": np.asarray(lrs)}


def _lr_scales(detector: Any, members: Members, idx: list[int],
               data: Any) -> tuple[list[list[list[float]]], list[list[list[str]]]] | None:
    """Per stage, member and optimiser group: the member's lr over the first member's, when the members'
    stages are the same but for the lr and that ratio stays constant over every epoch (None otherwise)."""
    with member_view(detector, members.overrides[idx[0]]):
        if vectorisable(detector.stages(members[idx[0]], data), [members[i] for i in idx]) is not None:
            return None  # stages that cannot be stacked train their members in turn anyway
    plans = []
    for i in idx:
        with member_view(detector, members.overrides[i]):
            plans.append([(stage, _schedule(stage, members[i])) for stage in detector.stages(members[i], data)])
    first = plans[0]
    if any(len(plan) != len(first) for plan in plans):
        return None
    scales, groups = [], []
    for s, (stage, sched) in enumerate(first):
        if sched is None:
            return None
        per_member = []
        for plan in plans:
            other, theirs = plan[s]
            if (theirs is None or any(getattr(other, f) != getattr(stage, f) for f in _STAGE_FIELDS)
                    or theirs["optimizer"] is not sched["optimizer"] or theirs["scheduler"] is not sched["scheduler"]
                    or not same_value(theirs["groups"], sched["groups"])):
                return None
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = theirs["lrs"] / sched["lrs"]
            if not np.all(np.isfinite(ratio)) or not np.allclose(ratio, ratio[0], rtol=1e-9, atol=0.0):
                return None
            per_member.append([float(r) for r in ratio[0]])
        scales.append(per_member)
        groups.append([list(names) for names, _ in sched["groups"]])
    return scales, groups


def training_groups(detector: Any, members: Members, data: Any) -> list[Group]:
    """Members that train together: the same grid values but ``lr`` and the same parameter structure form one
    group when their stages differ only in a learning rate that scales every update (:func:`_lr_scales`); any
    other difference splits them by their exact values. Without a grid: one group of every member."""
    def key(values: dict[str, Any]) -> str:
        return json.dumps(values, sort_keys=True, default=repr)

    buckets: dict[tuple[str, Any], list[int]] = {}
    for i, model in enumerate(members):
        rest = {k: v for k, v in members.overrides[i].items() if k != "lr"}
        buckets.setdefault((key(rest), _structure(model)), []).append(i)
    groups: list[Group] = []
    for idx in buckets.values():
        exact: dict[str, list[int]] = {}
        for i in idx:
            exact.setdefault(key(members.overrides[i]), []).append(i)
        found = _lr_scales(detector, members, idx, data) if len(exact) > 1 else None
        if found is not None:
            groups.append(Group(idx, *found))
        else:
            groups.extend(Group(sub) for sub in exact.values())
    return sorted(groups, key=lambda g: g.members[0])


def _train_stacked(detector: Any, models: list[nn.Module], stages: list[Any], data: Any,
                   group: Group) -> dict[str, Any]:
    """Train ``models`` as one vectorised model (each parameter stacked to (M, ...)); weights written back."""
    from torch.func import stack_module_state

    from aeguard.core.training import train_stages

    n, template = len(models), models[0]
    stacked, _ = stack_module_state(list(models))
    names = [name for name, _ in template.named_parameters()]
    originals = dict(template.named_parameters())
    factors: list[dict[str, torch.Tensor] | None] = [None] * len(stages)
    if group.lr_scales is not None and group.lr_groups is not None:
        for s, (per_member, opt_groups) in enumerate(zip(group.lr_scales, group.lr_groups)):
            found = {name: torch.tensor([per_member[k][g] for k in range(n)], dtype=torch.float64)
                     for g, params in enumerate(opt_groups) for name in params}
            factors[s] = {k: v for k, v in found.items() if not bool(torch.all(v == 1.0))} or None
    for name in names:
        _set_param(template, name, nn.Parameter(stacked[name].detach().clone(),
                                                requires_grad=originals[name].requires_grad))
    subsets = member_subsets(detector, data, group.members)
    try:
        history = train_stages(detector, template, [_vectorised_stage(st, template, names, n, factors[s], subsets)
                                                    for s, st in enumerate(stages)], data)
    finally:
        trained = {name: p.detach().clone() for name, p in template.named_parameters()}
        for name in names:
            _set_param(template, name, nn.Parameter(trained[name][0].clone(),
                                                    requires_grad=originals[name].requires_grad))
    for i, member in enumerate(models):
        if i == 0:
            continue
        with torch.no_grad():
            for name, p in member.named_parameters():
                p.copy_(trained[name][i])
    return history


#: how the stacked members stop early (the manifest's ``early_stopping``)
STACKED_STOPPING = ("on the mean member validation loss; best weights restored per member (each at its own "
                    "lowest validation loss)")


def _train_group(detector: Any, members: Members, group: Group, data: Any) -> tuple[list[dict[str, Any]], dict]:
    """Train one group in place: one history per member trained alone or in turn, or one for the stacked group;
    and the group's block (how it trained)."""
    from aeguard.core.training import train_stages

    idx = group.members
    models = [members[i] for i in idx]
    subsampled = member_subsets(detector, data, idx) is not None
    with member_view(detector, members.overrides[idx[0]]):
        stages = detector.stages(models[0], data)
        why_not = vectorisable(stages, models) if len(models) > 1 or subsampled else None
        if subsampled and why_not is not None:
            raise ValueError(f"member_subsample={detector.member_subsample!r} is not available for "
                             f"{type(detector).__name__}: its members cannot train as one vectorised model "
                             f"({why_not}); use member_subsample=1")
        if (len(models) > 1 or subsampled) and why_not is None:
            history = _train_stacked(detector, models, stages, data, group)
            block: dict[str, Any] = {"training": "vectorised", "early_stopping": STACKED_STOPPING}
            if group.lr_scales is not None:
                block["lr_scale"] = [member[0] for member in group.lr_scales[0]]
            return [history], block
        histories = [train_stages(detector, models[0], stages, data)]
    for i in idx[1:]:
        with member_view(detector, members.overrides[i]):
            histories.append(train_stages(detector, members[i], detector.stages(members[i], data), data))
    if len(models) == 1:
        return histories, {"training": "alone"}
    return histories, {"training": "sequential", "why": why_not,
                       "members": [{k: h.get(k) for k in ("epochs_run", "stopped_early", "best_epoch")}
                                   for h in histories]}


def _per_member(histories: list[dict[str, Any]], size: int, key: str) -> list[Any]:
    """A history value per member of a group (a stacked group's is one value, or a list, for all)."""
    if len(histories) == size:
        return [h.get(key) for h in histories]
    value = histories[0].get(key)
    return list(value) if isinstance(value, list) else [value] * size


def train_members(detector: Any, members: Members, data: Any) -> dict[str, Any]:
    """Train the members in place, group by group (:func:`training_groups`): a group vectorised when its stages
    allow it, else its members one after the other."""
    started = time.perf_counter()
    n = len(members)
    groups = training_groups(detector, members, data)
    runs = [_train_group(detector, members, group, data) for group in groups]
    grid = any(members.overrides)
    subsets = member_subsets(detector, data, [0])
    rows = {"member_subsample": {"fraction": float(detector.member_subsample), "rows": int(subsets.shape[1]),
                                 "of": int(len(data.train_idx))}} if subsets is not None else {}
    described = [{"members": g.members, **{k: v for k, v in block.items() if k not in ("early_stopping", "members")}}
                 for g, (_, block) in zip(groups, runs)]
    if len(runs) == 1:
        histories, block = runs[0]
        history = dict(histories[0])
        if len(histories) > 1:
            history.update(train_seconds=round(time.perf_counter() - started, 4),
                           epochs_run=[h["epochs_run"] for h in histories])
        shown = {k: v for k, v in block.items() if k != "lr_scale"}  # per group, below
        history["ensemble"] = {"n_members": n, **shown, **({"groups": described} if grid else {}), **rows}
        return history
    per_member: dict[str, list[Any]] = {"epochs_run": [None] * n, "best_epoch": [None] * n}
    for group, (histories, _) in zip(groups, runs):
        for key, values in per_member.items():
            for i, value in zip(group.members, _per_member(histories, len(group.members), key)):
                values[i] = value
    first = runs[0][0][0]
    history = {**first, "train_seconds": round(time.perf_counter() - started, 4),
               "epochs_run": per_member["epochs_run"],
               "stopped_early": any(h.get("stopped_early") for histories, _ in runs for h in histories),
               "ensemble": {"n_members": n, "training": "grouped", "groups": described, **rows}}
    if "best_epoch" in first:
        history["best_epoch"] = per_member["best_epoch"]
    if any(block["training"] == "vectorised" for _, block in runs):
        history["ensemble"]["early_stopping"] = STACKED_STOPPING + " (within each vectorised group)"
    return history
