"""Deep ensembles (``n_members``) for every DeepDetector: real Lightning training on small data, real ONNX export
and onnxruntime, nothing mocked (``aeguard.core.ensemble``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from aeguard.core import registry
from aeguard.core.artifact import load_artifact
from aeguard.core.ensemble import MAD_TO_STD, EnsembleModel
from aeguard.edge.variants import export_variant, spearman
from conftest import fast_params, make_table

#: full batch and no early stopping, so every member trains the same number of epochs
SMALL = {"epochs": 40, "epochs_per_step": 10}


def _create(name: str, **params):
    return registry.create(name, random_state=0, **{**fast_params(registry.get(name).cls), **SMALL, **params})


@pytest.fixture(scope="module")
def data():
    return make_table(n_inliers=240, n_outliers=12, d=6, seed=3)


@pytest.fixture(scope="module")
def fitted(data):
    """One fitted 3-member ensemble per detector the brief names (apre and ae+mss carry the mean shift)."""
    X, _ = data
    return {name: _create(name, n_members=3).fit(X) for name in ("ae", "apre", "ae+mss", "mahalanobis")}


def _member_scores(det, X: np.ndarray) -> list[np.ndarray]:
    """Each member's raw score of X against the detector's own target path (in process)."""
    z = det.standardize_(torch.from_numpy(X.astype(np.float32)))
    mss = getattr(det, "mss_", None)
    t = z if mss is None else torch.from_numpy(mss.shift(z.numpy()))
    with torch.no_grad():
        return [m.score_against(z, t)["score"].double().numpy() for m in det.model_.members]


@pytest.mark.parametrize("name", ["ae", "apre", "ae+mss", "mahalanobis"])
def test_ensemble_of_three_trains_vectorised_and_members_differ(name, fitted, data):
    X, y = data
    det = fitted[name]
    assert isinstance(det.model_, EnsembleModel) and det.model_.n_members == 3
    block = det.manifest_extra()["ensemble"]
    assert block["n_members"] == 3 and block["training"] == "vectorised" and len(set(block["member_seeds"])) == 3
    assert det.history_["ensemble"]["training"] == "vectorised"
    members = [dict(m.named_parameters()) for m in det.model_.members]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert any(not torch.equal(members[a][k], members[b][k]) for k in members[a]), (name, a, b)
    scores = det.decision_function(X)
    assert np.all(np.isfinite(scores)) and scores.shape == (len(X),)
    assert scores[y == 1].mean() > scores[y == 0].mean()


@pytest.mark.parametrize("name", ["ae", "apre", "ae+mss", "mahalanobis"])
def test_score_is_the_mean_of_robustly_scaled_members_and_explain_sums(name, fitted, data):
    """score = mean_i (s_i - median_i) / (1.4826 MAD_i) with each member's fit-set statistics; explain sums to it."""
    X, _ = data
    det = fitted[name]
    fit_z = det.standardize_(torch.from_numpy(X.astype(np.float32)))
    fit_t = fit_z if det._fit_targets is None else torch.from_numpy(det._fit_targets)
    with torch.no_grad():
        fit_scores = [m.score_against(fit_z, fit_t)["score"].double().numpy() for m in det.model_.members]
    centers = [float(np.median(s)) for s in fit_scores]
    scales = [MAD_TO_STD * float(np.median(np.abs(s - c))) for s, c in zip(fit_scores, centers)]
    np.testing.assert_allclose(det.ensemble_["centers"], centers, rtol=1e-6)
    np.testing.assert_allclose(det.ensemble_["scales"], scales, rtol=1e-6)
    expected = np.mean([(s - c) / k for s, c, k in zip(_member_scores(det, X), centers, scales)], axis=0)
    score = det.decision_function(X)
    np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(det.explain(X).to_numpy().sum(axis=1), score, rtol=1e-4,
                               atol=1e-5 * np.abs(score).max())
    np.testing.assert_allclose(det.decision_scores_, expected_fit := np.mean(
        [(s - c) / k for s, c, k in zip(fit_scores, centers, scales)], axis=0), rtol=1e-4,
        atol=1e-5 * np.abs(expected_fit).max())


@pytest.mark.parametrize("name", ["ae", "apre"])
def test_vectorised_training_equals_training_each_member_alone(name, data):
    """Member 0 is the single model's network; stacked full-batch training gives it the same weights."""
    X, _ = data
    single = _create(name).fit(X)
    ens = _create(name, n_members=2).fit(X)
    z = single.standardize_(torch.from_numpy(X.astype(np.float32)))
    with torch.no_grad():
        alone = single.model_.score_against(z, z)["score"].numpy()
        member0 = ens.model_.members[0].score_against(z, z)["score"].numpy()
        member1 = ens.model_.members[1].score_against(z, z)["score"].numpy()
    np.testing.assert_allclose(member0, alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())
    assert np.abs(member1 - alone).max() > 1e-3 * np.abs(alone).max()


@pytest.mark.parametrize("name", ["ae", "apre", "ae+mss", "mahalanobis"])
def test_n_members_1_is_the_single_model(name, data):
    X, _ = data
    default = _create(name).fit(X)
    one = _create(name, n_members=1).fit(X)
    assert default.get_params()["n_members"] == 1 and not isinstance(one.model_, EnsembleModel)
    assert "ensemble" not in one.manifest_extra()
    np.testing.assert_array_equal(one.decision_function(X), default.decision_function(X))
    np.testing.assert_array_equal(one.explain(X).to_numpy(), default.explain(X).to_numpy())
    assert one.threshold_ == default.threshold_


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "three"])
def test_bad_n_members_is_refused_naming_the_parameter(bad, data):
    X, _ = data
    with pytest.raises(ValueError, match="n_members"):
        _create("ae", n_members=bad).fit(X)


def test_n_members_is_a_parameter_of_every_deep_detector():
    from aeguard.core.deep import DeepDetector
    from aeguard.core.params import coerce_params

    deep = [r for r in registry.detectors().values() if issubclass(r.cls, DeepDetector)]
    assert len(deep) >= 4
    for record in deep:
        det = record.cls(n_members=4)
        assert det.get_params()["n_members"] == 4 and clone(det).n_members == 4, record.name
        assert coerce_params(record.cls, {"n_members": "3"})["n_members"] == 3, record.name


@pytest.mark.parametrize("name", ["apre", "ae+mss"])
@pytest.mark.parametrize("variant", ["fp32", "legacy"])
def test_one_onnx_graph_matches_torch_and_int8_still_exports(name, variant, fitted, data, tmp_path):
    X, _ = data
    det = fitted[name]
    art = det.save_artifact(tmp_path / name, variant=variant)
    model = load_artifact(art)
    onnx_out = model.score(X)
    torch_out = det.score_output(X)
    scale = np.abs(torch_out.score).max()
    np.testing.assert_allclose(onnx_out.score, torch_out.score, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(onnx_out.contrib, torch_out.contrib, rtol=1e-4, atol=1e-4 * scale)
    for comp, values in torch_out.components.items():
        np.testing.assert_allclose(onnx_out.components[comp], values, rtol=1e-4,
                                   atol=1e-4 * max(1.0, np.abs(values).max()), err_msg=comp)
    import onnx

    graph = onnx.load(str(art / "model.onnx"))
    # one mean shift shared by the members: one TopK per level, not one per member
    assert sum(n.op_type == "TopK" for n in graph.graph.node) == det.mss_m
    if variant == "fp32":
        int8 = load_artifact(export_variant(art, tmp_path / f"{name}-int8", int8=True))
        assert spearman(int8.score(X).score, onnx_out.score) > 0.9


def test_mean_shift_is_fitted_once_and_shared(fitted):
    det = fitted["apre"]
    assert det.target_ is not None and "_mss_memo" not in det.__dict__
    floors = [m.var_floor for m in det.model_.members]
    assert all(torch.equal(floors[0], f) for f in floors[1:])  # the floor is the shift's: same for every member


def test_early_stopping_runs_per_member(data):
    """With a hold-out and patience, each member keeps its own best epoch (recorded per member)."""
    X, _ = data
    det = _create("apre", n_members=3, epochs=400, val_fraction=0.2, early_stopping=20, restore_best=True,
                  epochs_per_step=20).fit(X)
    best = det.history_["best_epoch"]
    assert isinstance(best, list) and len(best) == 3 and all(0 < b <= 400 for b in best)


def test_stages_with_hooks_train_members_one_after_the_other(data):
    """A stage that builds its own tensors from the model cannot be stacked: members train in turn (cbnet)."""
    X, _ = data
    det = _create("cbnet", n_members=2).fit(X)
    assert det.ensemble_["training"] == "sequential" and "tensors" in det.ensemble_["why"]
    s = det.decision_function(X)
    np.testing.assert_allclose(det.explain(X).to_numpy().sum(axis=1), s, rtol=1e-4, atol=1e-5 * np.abs(s).max())


def test_training_cache_keys_on_n_members(data, tmp_path, monkeypatch):
    X, _ = data
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path / "cache"))
    first = _create("ae", n_members=2).fit(X)
    other = _create("ae", n_members=3).fit(X)
    again = _create("ae", n_members=2).fit(X)
    assert (first.history_["cache"], other.history_["cache"], again.history_["cache"]) == ("miss", "miss", "hit")
    np.testing.assert_array_equal(again.decision_function(X), first.decision_function(X))


def test_a_detector_with_its_own_fit_scores_refuses_an_ensemble(data):
    """sae_ood computes its threshold scores with a leave-own-row-out kNN inside the model: refused, named."""
    X, _ = data
    with pytest.raises(ValueError, match="n_members > 1 is not available for SAEOODDetector"):
        _create("sae_ood", n_members=2).fit(X)


# --- member_grid: per-member hyperparameters (ROBOD-style) ------------------------------------------------

LR_GRID = "lr:1e-3|3e-3"


def _score_parity(det, X: np.ndarray, tmp_path) -> dict:
    """One ONNX graph scores like torch (1e-4 relative); explain rows sum to the score; returns the manifest."""
    art = det.save_artifact(tmp_path / "art")
    onnx_out, torch_out = load_artifact(art).score(X), det.score_output(X)
    scale = np.abs(torch_out.score).max()
    np.testing.assert_allclose(onnx_out.score, torch_out.score, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(onnx_out.contrib, torch_out.contrib, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(det.explain(X).to_numpy().sum(axis=1), torch_out.score, rtol=1e-4,
                               atol=1e-5 * scale)
    import json

    return json.loads((art / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["ae", "ae+mss"])
def test_lr_grid_trains_vectorised_exports_and_records_each_members_values(name, data, tmp_path):
    X, y = data
    det = _create(name, n_members=3, member_grid=LR_GRID).fit(X)
    block = det.ensemble_
    assert block["member_overrides"] == [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-3}]  # cycling, in order
    assert block["training"] == "vectorised"
    assert block["groups"] == [{"members": [0, 1, 2], "training": "vectorised", "lr_scale": [1.0, 3.0, 1.0]}]
    manifest = _score_parity(det, X, tmp_path)
    assert manifest["extra"]["ensemble"]["member_overrides"][1] == {"lr": 3e-3}
    assert manifest["extra"]["ensemble"]["member_grid"] == LR_GRID
    assert manifest["detector"]["params"]["member_grid"] == LR_GRID
    scores = det.decision_function(X)
    assert scores[y == 1].mean() > scores[y == 0].mean()


def test_a_member_trained_with_a_scaled_lr_is_the_member_trained_with_its_own(data):
    """Members that differ only in lr share one stacked optimiser; each update is scaled to the member's own lr,
    which gives the weights of that member trained with its lr alone (and member 0 stays the single model)."""
    X, _ = data
    mixed = _create("ae", n_members=2, member_grid=LR_GRID).fit(X)
    own = _create("ae", n_members=2, member_grid="lr:3e-3").fit(X)  # every member at 3e-3: no scaling
    single = _create("ae").fit(X)
    assert own.ensemble_["groups"] == [{"members": [0, 1], "training": "vectorised"}]
    z = single.standardize_(torch.from_numpy(X.astype(np.float32)))
    with torch.no_grad():
        scaled = mixed.model_.members[1].score_against(z, z)["score"].numpy()
        alone = own.model_.members[1].score_against(z, z)["score"].numpy()
        first = mixed.model_.members[0].score_against(z, z)["score"].numpy()
        first_at_3e3 = own.model_.members[0].score_against(z, z)["score"].numpy()
        reference = single.model_.score_against(z, z)["score"].numpy()
    np.testing.assert_allclose(scaled, alone, rtol=1e-5, atol=1e-5 * np.abs(alone).max())
    np.testing.assert_allclose(first, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    assert np.abs(first_at_3e3 - first).max() > 1e-3 * np.abs(reference).max()  # the lr does matter here


def test_members_of_different_widths_train_in_groups_of_equal_structure(data, tmp_path):
    """latent 2 or 3 (mahalanobis): two structures, each a vectorised group with its own lr per member."""
    X, _ = data
    det = _create("mahalanobis", n_members=4, member_grid="latent:2|3;lr:1e-3|2e-3").fit(X)
    assert det.ensemble_["member_overrides"] == [{"latent": 2, "lr": 1e-3}, {"latent": 2, "lr": 2e-3},
                                                 {"latent": 3, "lr": 1e-3}, {"latent": 3, "lr": 2e-3}]
    assert [m.m for m in det.model_.members] == [2, 2, 3, 3]
    assert det.ensemble_["training"] == "grouped"
    assert det.ensemble_["groups"] == [{"members": [0, 1], "training": "vectorised", "lr_scale": [1.0, 2.0]},
                                       {"members": [2, 3], "training": "vectorised", "lr_scale": [1.0, 2.0]}]
    assert len(det.history_["best_epoch"]) == 4 and len(det.history_["epochs_run"]) == 4
    _score_parity(det, X, tmp_path)


@pytest.mark.parametrize(("name", "params", "match"), [
    ("ae", {"member_grid": "width:4|8"}, r"member_grid entry 'width:4\|8': 'width' is not a parameter of AEDetector"),
    ("ae", {"member_grid": "lr:abc|1e-3"}, r"member_grid entry 'lr:abc\|1e-3': lr must be a number > 0, got 'abc'"),
    ("ae", {"member_grid": "epochs:0|10"}, r"member_grid entry 'epochs:0\|10': epochs must be an int >= 1"),
    ("ae", {"member_grid": LR_GRID, "n_members": 1}, r"member_grid 'lr:1e-3\|3e-3' needs n_members >= 2"),
    ("ae", {"member_grid": "n_members:2|3"}, r"member_grid entry 'n_members:2\|3': n_members is the ensemble"),
    ("ae", {"member_grid": "contamination:0.1|0.2"}, r"entry 'contamination:0.1\|0.2': contamination sets the thr"),
    ("ae", {"member_grid": "val_fraction:0|0.2"}, r"entry 'val_fraction:0\|0.2': val_fraction sets the training/"),
    ("ae", {"member_grid": "random_state:1|2"}, r"entry 'random_state:1\|2': random_state seeds the split"),
    ("ae+mss", {"member_grid": "mss_k:5|10"}, r"entry 'mss_k:5\|10': mss_k is a scoring parameter of AEMSSDet"),
    ("apre", {"member_grid": "alpha:0.5|1"}, r"entry 'alpha:0.5\|1': alpha is a scoring parameter of APREDetector"),
    ("apre", {"member_grid": LR_GRID, "faithful": True}, r"with faithful=True, APREDetector imposes lr=0.001"),
    ("ae", {"member_grid": "lr=1e-3"}, r"member_grid entry 'lr=1e-3': expected name:value\|value"),
    ("ae", {"member_grid": "lr:1e-3|"}, r"member_grid entry 'lr:1e-3\|': expected name:value\|value"),
    ("ae", {"member_grid": "lr:1e-3;lr:2e-3"}, r"member_grid entry 'lr:2e-3': lr is given twice"),
    ("ae", {"member_grid": 3}, r"member_grid must be 'none' or a grid"),
])
def test_bad_grids_are_refused_naming_member_grid_and_the_entry(name, params, match, data):
    """Refused where text becomes a detector (--param, benchmark specs) and at fit from Python."""
    X, _ = data
    params = {"n_members": 2, **params}
    with pytest.raises(ValueError, match=match):
        registry.build_detector(name, params)
    with pytest.raises(ValueError, match=match):
        _create(name, **params).fit(X)


def test_a_grid_value_that_changes_prepare_is_refused_on_the_data(data):
    """fader's prepare groups the features (n_groups); members share one prepare, so that grid is refused."""
    X, _ = data
    det = _create("fader", n_members=2, member_grid="n_groups:2|3")
    with pytest.raises(ValueError, match=r"member_grid entry 'n_groups:2': n_groups=2 changes what "
                                         r"FaderDetector.prepare computes \(.*groups_.*\), which the members share"):
        det.fit(X)
    assert det.n_groups == _create("fader").n_groups  # the detector's own value is back


def test_members_scoring_with_other_outputs_are_refused(data):
    """The graph combines member outputs name by name: members with other outputs cannot share one graph."""
    from aeguard.core.deep import DeepDetector, FitData
    from aeguard.plugins.ae.torch_model import AutoEncoder
    from aeguard.plugins.apre.torch_model import ProbabilisticAutoEncoder

    z = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    fit = FitData(z=z, train_idx=np.arange(8), val_idx=np.arange(0), seed=0)
    with pytest.raises(ValueError, match=r"member_grid: member 1 \(\{'x': 2\}\) scores with outputs"):
        DeepDetector._check_member_outputs([AutoEncoder(6), ProbabilisticAutoEncoder(6)], fit, None,
                                           [{"x": 1}, {"x": 2}])


def test_grid_order_text_and_dict_agree_and_the_cache_keys_on_the_grid(data, tmp_path, monkeypatch):
    """Cartesian product, last name fastest, member i takes combination i mod K; text and dict give the same
    members and the same training key; another grid is another key."""
    from aeguard.core.ensemble import member_overrides

    text = _create("ae", n_members=5, member_grid="lr:1e-3|2e-3;epochs:10|20")
    assert member_overrides(text) == [{"lr": 1e-3, "epochs": 10}, {"lr": 1e-3, "epochs": 20},
                                      {"lr": 2e-3, "epochs": 10}, {"lr": 2e-3, "epochs": 20},
                                      {"lr": 1e-3, "epochs": 10}]
    as_dict = _create("ae", n_members=5, member_grid={"lr": [1e-3, 2e-3], "epochs": ["10", 20]})
    assert member_overrides(as_dict) == member_overrides(text)
    X, _ = data
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path / "cache"))
    first = _create("ae", n_members=2, member_grid=LR_GRID).fit(X)
    again = _create("ae", n_members=2, member_grid={"lr": [1e-3, 3e-3]}).fit(X)
    other = _create("ae", n_members=2, member_grid="lr:1e-3|2e-3").fit(X)
    plain = _create("ae", n_members=2).fit(X)
    assert [d.history_["cache"] for d in (first, again, other, plain)] == ["miss", "hit", "miss", "miss"]
    np.testing.assert_array_equal(again.decision_function(X), first.decision_function(X))


def test_member_grid_through_the_cli_and_a_benchmark_spec(tmp_path, data):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from aeguard.benchmark.protocol import parse_detector_spec
    from aeguard.core.cli import app
    from aeguard.core.ensemble import member_overrides

    spec = "ae(n_members=4,member_grid=lr:1e-3|3e-3;epochs:20|40,epochs_per_step=10)"
    label, name, params = parse_detector_spec(spec)
    assert (name, params) == ("ae", {"n_members": 4, "member_grid": "lr:1e-3|3e-3;epochs:20|40",
                                     "epochs_per_step": 10})
    assert [m["epochs"] for m in member_overrides(registry.build_detector(name, params))] == [20, 40, 20, 40]
    X, _ = data
    path = tmp_path / "d.csv"
    pd.DataFrame(X[:120], columns=[f"s{i}" for i in range(X.shape[1])]).to_csv(path, index=False)
    result = CliRunner().invoke(app, ["fit", "ae", str(path), "-o", str(tmp_path / "art"), "--param", "n_members=2",
                                      "--param", f"member_grid={LR_GRID}", "--param", "epochs=20",
                                      "--param", "epochs_per_step=10"])
    assert result.exit_code == 0, result.exception
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["extra"]["ensemble"]["member_overrides"] == [{"lr": 1e-3}, {"lr": 3e-3}]
    bad = CliRunner().invoke(app, ["fit", "ae", str(path), "-o", str(tmp_path / "bad"), "--param", "n_members=2",
                                   "--param", "member_grid=width:4|8"])
    assert bad.exit_code != 0 and "member_grid entry 'width:4|8'" in str(bad.exception)
    assert not (tmp_path / "bad").exists()


# --- member_subsample: each member on its own sample of the rows ------------------------------------------


def test_member_subsample_gives_each_member_exactly_its_own_rows(data):
    """The stacked loss and gradient of the subsampled stage are each member's own loss and gradient on its
    own rows (checked against the members computed one by one)."""
    from torch.func import stack_module_state

    from aeguard.core.deep import FitData
    from aeguard.core.ensemble import _set_param, _vectorised_stage, member_seed, member_subsets

    X, _ = data
    det = _create("ae", n_members=3, member_subsample=0.25)
    z = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    fit = FitData(z=z, train_idx=np.arange(len(z)), val_idx=np.arange(0), seed=0)
    subsets = member_subsets(det, fit, range(3))
    assert subsets.shape == (3, round(0.25 * len(z))) and len({tuple(s) for s in subsets}) == 3
    models = []
    for i in range(3):
        torch.manual_seed(member_seed(0, i))
        models.append(det.build_model(fit))
    stage = det.stages(models[0], fit)[0]
    template = det.build_model(fit)
    stacked, _ = stack_module_state(models)
    names = [n for n, _ in template.named_parameters()]
    for name in names:
        _set_param(template, name, torch.nn.Parameter(stacked[name].detach().clone()))
    own = _vectorised_stage(stage, template, names, 3, subsets=subsets)
    (rows,) = own.train_arrays(fit)
    assert rows.shape == (subsets.shape[1], 3, z.shape[1]) and own.val_arrays(fit) is None
    loss = own.loss(template, torch.from_numpy(rows))
    loss.backward()
    expected = 0.0
    for i, model in enumerate(models):
        member_loss = stage.loss(model, torch.from_numpy(z[subsets[i]]))
        member_loss.backward()
        expected = expected + float(member_loss.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(dict(template.named_parameters())[name].grad[i], p.grad)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_member_subsample_fit_records_the_samples_and_scores(data):
    X, y = data
    det = _create("ae", n_members=3, member_subsample=0.25).fit(X)
    n = len(X)
    assert det.history_["ensemble"]["member_subsample"] == {"fraction": 0.25, "rows": round(0.25 * n), "of": n}
    assert det.history_["stages"][0]["n_train"] == round(0.25 * n)
    assert det.manifest_extra()["ensemble"]["training"] == "vectorised"
    scores = det.decision_function(X)
    assert np.all(np.isfinite(scores)) and scores[y == 1].mean() > scores[y == 0].mean()
    full = _create("ae", n_members=3).fit(X)
    assert "member_subsample" not in full.history_["ensemble"]
    assert not np.allclose(full.decision_function(X), scores)


def test_member_subsample_refusals_name_the_parameter(data):
    X, _ = data
    for bad in (0, 0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="member_subsample"):
            registry.build_detector("ae", {"n_members": 3, "member_subsample": bad}, seed=0)
    with pytest.raises(ValueError, match=r"member_subsample=0.5 needs n_members >= 2"):
        _create("ae", member_subsample=0.5).fit(X)
    with pytest.raises(ValueError, match=r"member_subsample=0.5 is not available for CBNetDetector"):
        _create("cbnet", n_members=2, member_subsample=0.5).fit(X)
    with pytest.raises(ValueError, match=r"member_grid entry 'member_subsample:0.5\|1': member_subsample is the size"):
        _create("ae", n_members=2, member_grid="member_subsample:0.5|1").fit(X)


def test_training_cache_keys_on_member_subsample_and_not_at_one(data, tmp_path, monkeypatch):
    X, _ = data
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path / "cache"))
    plain = _create("ae", n_members=2).fit(X)
    at_one = _create("ae", n_members=2, member_subsample=1.0).fit(X)
    half = _create("ae", n_members=2, member_subsample=0.5).fit(X)
    assert [d.history_["cache"] for d in (plain, at_one, half)] == ["miss", "hit", "miss"]
