"""The label-free benchmark protocol, shared by every aeguard evaluation (ODDS benchmark, ablations, INT8 checks).

One place defines the split and how detector specs are written, so all tables built on it stay comparable:

- :func:`make_split`: stratified 60 % fit / 40 % test split (PyOD's published ODDS benchmark split), the fit
  split subsampled to ``fit_cap`` rows with the same seed; stratifying only keeps the outlier ratio equal, no
  label is used for any choice.
- :func:`parse_detector_spec` / :func:`parse_detector_list`: ``ae``, ``iforest``, ``apre(mss=false,alpha=1)``;
  the label of a parameterised spec is the spec string itself.
- :func:`baseline_scaling`: the input scaling a baseline spec runs with (``--baseline-scaling``); every
  aeguard detector standardizes with fit-split statistics inside its graph, and so do the baselines by default.

Only numpy is imported at module level; scikit-learn is imported when a split is made.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

#: test share of every split (the rest is the fit split)
TEST_SIZE = 0.4
#: fit splits larger than this are subsampled (same seed), for every detector alike
FIT_CAP = 20_000
#: the PyOD baselines that ``--detectors baselines`` expands to (each a registered aeguard detector)
BASELINES = ("iforest", "ecod", "copod", "hbos", "knn", "lof", "ocsvm", "pca")
#: the hyperparameter of a baseline that sets its input scaling (``--baseline-scaling``)
SCALING_PARAM = "scaling"

_NAME = re.compile(r"^[A-Za-z_][\w.+\-]*$")
_KEY = re.compile(r"^[A-Za-z_]\w*$")


def split_indices(y: np.ndarray, seed: int, fit_cap: int | None = FIT_CAP) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(fit, test)`` of the protocol's split (see :func:`make_split`), so that per-row arrays
    besides ``X`` and ``y`` (class labels) follow the same split."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y).ravel()
    fit_idx, test_idx = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=seed)
    if fit_cap is not None and len(fit_idx) > fit_cap:
        keep = np.sort(np.random.RandomState(seed).choice(len(fit_idx), size=fit_cap, replace=False))
        fit_idx = fit_idx[keep]
    return fit_idx, test_idx


def make_split(
    X: np.ndarray, y: np.ndarray, seed: int, fit_cap: int | None = FIT_CAP
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified 60/40 split ``(X_fit, X_test, y_fit, y_test)``; the fit split is capped at ``fit_cap`` rows.

    ``train_test_split(test_size=0.4, stratify=y, random_state=seed)``, then, if the fit split is larger than
    ``fit_cap``, ``fit_cap`` of its rows drawn uniformly without replacement with ``RandomState(seed)`` (kept in
    their split order). The test split is never subsampled. ``y_fit`` is returned for bookkeeping only: the
    protocol never shows it to a detector.
    """
    X = np.asarray(X)
    y = np.asarray(y).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be 2-D with one label per row, got X {X.shape} and y {y.shape}")
    fit_idx, test_idx = split_indices(y, seed, fit_cap)
    return X[fit_idx], X[test_idx], y[fit_idx], y[test_idx]


def parse_detector_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``(label, registry_name, params)`` for one detector spec.

    ``"ae"`` -> ``("ae", "ae", {})``; ``"apre(mss=false, alpha=1)"`` -> ``("apre(mss=false, alpha=1)", "apre",
    {"mss": False, "alpha": 1})``. Values are parsed as JSON where possible (numbers, true/false, null, lists,
    quoted strings), else kept as strings. The registry name is not checked here.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty detector spec")
    if "(" not in text:
        if not _NAME.match(text):
            raise ValueError(f"invalid detector spec {spec!r}: expected NAME or NAME(key=value, ...)")
        return text, text, {}
    name, _, rest = text.partition("(")
    name = name.strip()
    if not rest.endswith(")") or not _NAME.match(name):
        raise ValueError(f"invalid detector spec {spec!r}: expected NAME or NAME(key=value, ...)")
    params: dict[str, Any] = {}
    for item in _split_top_level(rest[:-1]):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ValueError(f"invalid parameter {item.strip()!r} in detector spec {spec!r}: expected key=value")
        if key in params:
            raise ValueError(f"parameter {key!r} given twice in detector spec {spec!r}")
        params[key] = _parse_value(raw.strip())
    return text, name, params


def parse_detector_list(text: str, registered: list[str] | None = None) -> list[str]:
    """Split a ``--detectors`` value on commas outside parentheses and expand the shorthands.

    ``baselines`` expands to the 8 PyOD baselines, ``all`` to every registered detector (``registered``, in
    order). Duplicates are dropped, first occurrence wins.
    """
    specs: list[str] = []
    for item in _split_top_level(text):
        item = item.strip()
        if not item:
            continue
        if item == "baselines":
            specs.extend(BASELINES)
        elif item == "all":
            if registered is None:
                raise ValueError("'all' needs the list of registered detectors")
            specs.extend(registered)
        else:
            parse_detector_spec(item)  # validate the syntax early
            specs.append(item)
    if not specs:
        raise ValueError(f"no detectors in {text!r}")
    return list(dict.fromkeys(specs))


def with_param(spec: str, key: str, value: str) -> str:
    """``spec`` with ``key=value`` appended, written as given: ``ocsvm`` -> ``ocsvm(scaling=none)``,
    ``knn(n_neighbors=10)`` -> ``knn(n_neighbors=10,scaling=none)``. A key the spec already sets is an error."""
    if key in parse_detector_spec(spec)[2]:
        raise ValueError(f"detector spec {spec!r} already sets {key!r}")
    text = spec.strip()
    if "(" not in text:
        return f"{text}({key}={value})"
    inner = text[text.index("(") + 1:-1].strip()
    return f"{text[:-1]}{',' if inner else ''}{key}={value})"


def is_baseline(spec: str) -> bool:
    """A baseline is one of the PyOD adapters (:data:`BASELINES`); they export ONNX like every detector now."""
    return parse_detector_spec(spec)[1] in BASELINES


def baseline_scaling(spec: str) -> str | None:
    """The input scaling of a baseline spec: its explicit ``scaling=`` (``none`` parses as None and means
    ``"none"``), else its class's default (``"standard"`` for the PyOD adapter); None when the spec is no
    baseline or its class has no ``scaling``."""
    _, name, params = parse_detector_spec(spec)
    if not is_baseline(spec):
        return None
    if SCALING_PARAM in params:
        return "none" if params[SCALING_PARAM] is None else str(params[SCALING_PARAM])
    try:
        import inspect

        from aeguard.core import registry

        declared = inspect.signature(registry.get(name).cls.__init__).parameters.get(SCALING_PARAM)
    except Exception:  # noqa: BLE001 - report built where the detector is not installed
        return None
    return None if declared is None or declared.default is inspect.Parameter.empty else str(declared.default)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside (), [] or {} and not inside quotes."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced parentheses in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ValueError(f"unbalanced parentheses or quotes in {text!r}")
    parts.append(text[start:])
    return parts


def _parse_value(raw: str) -> Any:
    """A spec value as the literal it spells (core's one literal parser; the detector's specs check the type)."""
    from aeguard.core.params import parse_literal

    return parse_literal(raw)
