"""Typed hyperparameters: one parser and one check for every way a detector is configured.

A detector declares the types and ranges of its constructor arguments once, next to ``__init__``::

    param_spec: ClassVar[dict[str, Spec]] = {"epochs": Int(low=1), "lr": Float(low=0, low_open=True)}

Arguments it does not declare get a spec from their annotation or default (``bool`` -> :class:`Bool`, ``int``
-> :class:`Int`, ``float`` -> :class:`Float`); ``contamination`` and ``random_state`` keep their own checks.
:func:`coerce_params` turns text (``--param``, benchmark specs, query strings) into typed values and checks
them; :func:`check_params` checks an estimator's stored values at ``fit`` (direct Python API users). Every
error names the parameter: ``epochs must be an int >= 1, got 'abc'``. Only the standard library and numpy.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: words accepted for booleans (any case); numbers 0/1 are accepted too
TRUE_WORDS = ("true", "yes", "on")
FALSE_WORDS = ("false", "no", "off")
NONE_WORDS = ("none", "null")
#: arguments with their own checks elsewhere (thresholds.check_contamination, base.resolve_seed)
OWN_CHECKS = ("contamination", "random_state")


class ParamError(ValueError):
    """A bad hyperparameter value or name (a ``ValueError``, so callers that catch those keep working)."""


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of the parameter specs; ``none`` says whether ``None`` is a valid value (and what it means)."""

    none: bool = False
    #: what None means, for the message (e.g. "full batch")
    none_means: str = ""

    def kind(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        text = self.kind()
        if self.none and self._mention_none():
            text += f" or None{f' ({self.none_means})' if self.none_means else ''}"
        return text

    def _mention_none(self) -> bool:
        return True

    def fail(self, name: str, value: Any) -> ParamError:
        return ParamError(f"{name} must be {self.describe()}, got {value!r}")

    def parse(self, name: str, value: Any) -> Any:
        """A typed value from text or a typed value, checked; raises :class:`ParamError` naming ``name``."""
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS and self.none):
            if not self.none:
                raise self.fail(name, value)
            return None
        return self.check(name, self._from_text(name, value.strip()) if isinstance(value, str) else value)

    def _from_text(self, name: str, text: str) -> Any:
        return text

    def check(self, name: str, value: Any) -> Any:
        """``value`` unchanged if valid (``None`` allowed when the spec says so)."""
        if value is None:
            if self.none:
                return None
            raise self.fail(name, value)
        return self._check(name, value)

    def _check(self, name: str, value: Any) -> Any:
        return value

    def check_for(self, estimator: Any, name: str, value: Any) -> Any:
        """:meth:`check` with the estimator at hand, for a spec whose validity depends on the estimator's class
        or its other parameters (:class:`Grid`); default: :meth:`check`."""
        return self.check(name, value)


@dataclass(frozen=True, kw_only=True)
class _Range(Spec):
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def _bounds(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def _in_range(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))


@dataclass(frozen=True, kw_only=True)
class Int(_Range):
    """An integer (``2.0`` and ``1e3`` from text count as integers; ``2.5`` and booleans do not)."""

    def kind(self) -> str:
        bounds = self._bounds()
        return f"an int{' ' + bounds if bounds else ''}"

    def _from_text(self, name: str, text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise self.fail(name, text) from None
        if not number.is_integer():
            raise self.fail(name, number)
        return int(number)

    def _check(self, name: str, value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise self.fail(name, value)
        if not self._in_range(int(value)):
            raise self.fail(name, value)
        return value


@dataclass(frozen=True, kw_only=True)
class Float(_Range):
    """A finite real number (ints accepted)."""

    def kind(self) -> str:
        bounds = self._bounds()
        return f"a number{' ' + bounds if bounds else ''}"

    def _from_text(self, name: str, text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            raise self.fail(name, text) from None

    def _check(self, name: str, value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.fail(name, value)
        if not math.isfinite(float(value)) or not self._in_range(float(value)):
            raise self.fail(name, value)
        return value


@dataclass(frozen=True, kw_only=True)
class Bool(Spec):
    """A boolean: true/false, yes/no, on/off (any case) or 1/0 from text; Python bools (and 0/1) as values."""

    def kind(self) -> str:
        return "a boolean (true/false, yes/no, on/off)"

    def _from_text(self, name: str, text: str) -> Any:
        word = text.lower()
        if word in TRUE_WORDS or word == "1":
            return True
        if word in FALSE_WORDS or word == "0":
            return False
        raise self.fail(name, text)

    def _check(self, name: str, value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)):
            return value
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        raise self.fail(name, value)


@dataclass(frozen=True, kw_only=True)
class Choice(Spec):
    """One of a fixed set of strings."""

    choices: tuple[str, ...] = ()

    def kind(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    def _mention_none(self) -> bool:
        return "none" not in self.choices  # None is read as the choice 'none'

    def parse(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and value.strip() in self.choices:  # "none" may be a choice of its own
            return value.strip()
        if value is None and not self.none and "none" in self.choices:  # `mode=none` read as a literal null
            return "none"
        return super().parse(name, value)

    def _check(self, name: str, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            raise self.fail(name, value)
        return value


@dataclass(frozen=True, kw_only=True)
class Str(Spec):
    """Any string."""

    def kind(self) -> str:
        return "a string"

    def _check(self, name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise self.fail(name, value)
        return value


@dataclass(frozen=True, kw_only=True)
class Free(Spec):
    """No declared type: text is read as a literal (numbers, booleans, None, JSON lists/objects, strings)."""

    none: bool = True

    def kind(self) -> str:
        return "any value"

    def parse(self, name: str, value: Any) -> Any:
        return parse_literal(value) if isinstance(value, str) else value


#: separators of a grid's text form: entries, a name from its values, one value from the next; none is a comma,
#: a bracket or ``=``, so a grid survives benchmark spec strings (``ae(n_members=4,member_grid=lr:1e-3|3e-3)``)
GRID_ENTRY, GRID_NAME, GRID_VALUE = ";", ":", "|"


@dataclass(frozen=True, kw_only=True)
class Grid(Spec):
    """Values of other constructor parameters, one list per name: ``name:v1|v2;name:v1|v2`` as text, or a dict
    ``{name: [v1, v2]}`` from Python; ``none`` (or None, or an empty dict) is no grid.

    This spec checks the form only (:func:`grid_entries`); the names and values depend on the estimator's
    class, so ``validate(estimator, entries)``, set by the class that declares the parameter, checks them in
    :meth:`check_for` (``check_params``: at ``fit`` and when a detector is built from text).
    """

    none: bool = True
    validate: Callable[[Any, dict[str, list[Any]]], Any] | None = field(default=None, compare=False)

    def kind(self) -> str:
        return (f"'none' or a grid 'name{GRID_NAME}v1{GRID_VALUE}v2{GRID_ENTRY}name{GRID_NAME}v1' "
                "(from Python also a dict name -> list of values)")

    def _mention_none(self) -> bool:
        return False

    def parse(self, name: str, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.lower() in NONE_WORDS:
                return "none"
        return self.check(name, value)

    def _check(self, name: str, value: Any) -> Any:
        grid_entries(value, name)
        return value

    def check_for(self, estimator: Any, name: str, value: Any) -> Any:
        entries = grid_entries(self.check(name, value), name)
        if entries and self.validate is not None:
            self.validate(estimator, entries)
        return value


def grid_entries(value: Any, name: str = "member_grid") -> dict[str, list[Any]]:
    """``{parameter: [values]}`` of a :class:`Grid` value, in the order written; ``{}`` for no grid. Text values
    stay text (each parameter's own spec parses them); a bad form raises naming ``name`` and the entry."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return {}
    if isinstance(value, Mapping):
        out: dict[str, list[Any]] = {}
        for key, values in value.items():
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            if not isinstance(key, str) or not key.isidentifier() or not values:
                raise ParamError(f"{name} entry {key!r}: expected a parameter name with at least one value, "
                                 f"got {values!r}")
            out[key] = values
        return out
    if not isinstance(value, str):
        raise ParamError(f"{name} must be {Grid().describe()}, got {value!r}")
    out = {}
    for entry in value.split(GRID_ENTRY):
        if not entry.strip():
            continue
        key, sep, rest = entry.partition(GRID_NAME)
        key = key.strip()
        values = [v.strip() for v in rest.split(GRID_VALUE)]
        if not sep or not key.isidentifier() or any(not v for v in values):
            raise ParamError(f"{name} entry {entry.strip()!r}: expected name{GRID_NAME}value{GRID_VALUE}value..., "
                             f"entries separated by {GRID_ENTRY!r}")
        if key in out:
            raise ParamError(f"{name} entry {entry.strip()!r}: {key} is given twice")
        out[key] = values
    if not out:
        raise ParamError(f"{name} must be {Grid().describe()}, got {value!r}")
    return out


def parse_literal(text: str) -> Any:
    """Text as the value it spells: true/false/yes/no/on/off, none/null, ints, floats, JSON, else the string."""
    raw = text.strip()
    word = raw.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    if word in NONE_WORDS:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


#: the shared hyperparameters of Lightning-trained detectors (``aeguard.core.deep``), for their ``param_spec``
TRAINING_SPEC: dict[str, Spec] = {
    "epochs": Int(low=1),
    "lr": Float(low=0, low_open=True),
    "batch_size": Int(low=1, none=True, none_means="full batch"),
    "val_fraction": Float(low=0, high=1, high_open=True),
    "early_stopping": Int(low=1, none=True, none_means="off"),
    "epochs_per_step": Int(low=1),
    "device": Choice(choices=("auto", "cpu", "cuda")),
    "verbose": Bool(),
}


# --- what a class declares ---------------------------------------------------------------------------------


def signature_defaults(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's named parameters (no ``self``, no ``*args``/``**kwargs``)."""
    sig = inspect.signature(cls.__init__)
    return {n: p for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _from_annotation(param: inspect.Parameter) -> Spec:
    """A spec from a constructor annotation (strings under ``from __future__ import annotations``) or default."""
    ann = param.annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", "") if ann is not inspect.Parameter.empty else ""
    parts = {p.strip() for p in str(text).replace("Optional[", "").rstrip("]").split("|") if p.strip()}
    none = "None" in parts or param.default is None
    parts.discard("None")
    default = param.default
    if parts == {"bool"} or (not parts and isinstance(default, bool)):
        return Bool(none=none)
    if parts == {"int"} or (not parts and isinstance(default, int) and not isinstance(default, bool)):
        return Int(none=none)
    if parts in ({"float"}, {"int", "float"}) or (not parts and isinstance(default, float)):
        return Float(none=none)
    if parts == {"str"} or (not parts and isinstance(default, str)):
        return Str(none=none)
    return Free()


def param_specs(cls: type) -> dict[str, Spec]:
    """Every constructor parameter's spec: declared ``param_spec`` entries (merged over the class's MRO, the
    most derived first) win; the rest come from annotations and defaults. Parameters with their own checks
    (``contamination``, ``random_state``) and free-form ones are :class:`Free`."""
    declared: dict[str, Spec] = {}
    for klass in reversed(cls.__mro__):
        declared.update(getattr(klass, "__dict__", {}).get("param_spec", {}) or {})
    out: dict[str, Spec] = {}
    for name, param in signature_defaults(cls).items():
        if name in declared:
            out[name] = declared[name]
        elif name in OWN_CHECKS:
            out[name] = Free()
        else:
            out[name] = _from_annotation(param)
    return out


def unknown_error(owner: str, unknown: list[str], valid: list[str]) -> ParamError:
    return ParamError(f"unknown parameter(s) for {owner}: {sorted(unknown)}; valid: {', '.join(sorted(valid))}")


def coerce_params(cls: type, params: Mapping[str, Any], owner: str | None = None,
                  fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Typed, checked values for ``params`` (text or typed values) of detector class ``cls``.

    Unknown names raise listing the valid ones, except where the class has a free-form ``params`` dict (the
    PyOD adapter: ``n_neighbors=10`` goes to the wrapped model, which checks it). ``fixed`` are arguments the
    registry record sets (not settable by the user).
    """
    specs = param_specs(cls)
    fixed = dict(fixed or {})
    owner = owner or cls.__name__
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in params.items():
        if name in fixed:
            raise ParamError(f"{name} is fixed for {owner} ({fixed[name]!r}) and cannot be set")
        if name not in specs:
            extra[name] = value
            continue
        out[name] = specs[name].parse(name, value)
    if extra:
        if "params" not in specs:
            raise unknown_error(owner, list(extra), [n for n in specs if n not in fixed])
        free_names = getattr(cls, "free_param_names", None)  # the wrapped model's own arguments, if known
        allowed = set(free_names(fixed)) if callable(free_names) else None
        if allowed is not None and set(extra) - allowed:
            raise unknown_error(owner, sorted(set(extra) - allowed),
                                [n for n in specs if n not in fixed and n != "params"] + sorted(allowed))
        free = out.get("params") or {}
        if not isinstance(free, dict):
            raise ParamError(f"params must be a dict of keyword arguments, got {free!r}")
        out["params"] = {**free, **{k: parse_literal(v) if isinstance(v, str) else v for k, v in extra.items()}}
    return out


def check_params(estimator: Any) -> None:
    """Check an estimator's stored hyperparameters against its class's specs (called at ``fit``)."""
    specs = param_specs(type(estimator))
    for name, spec in specs.items():
        if isinstance(spec, Free) or not hasattr(estimator, name):
            continue
        spec.check_for(estimator, name, getattr(estimator, name))


def describe_params(cls: type) -> dict[str, str]:
    """``name -> "an int >= 1 (default 500)"`` for help texts and docs."""
    defaults = signature_defaults(cls)
    out = {}
    for name, spec in param_specs(cls).items():
        default = defaults[name].default
        shown = "" if default is inspect.Parameter.empty else f" (default {default!r})"
        out[name] = spec.describe() + shown
    return out
