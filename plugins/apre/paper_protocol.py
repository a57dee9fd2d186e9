"""The authors' label-assisted protocol ("paper protocol", ``apre.md`` section 7), for the benchmark only.

This reproduces ``main.py``/``libs/train.py`` of Ra1demmmm/Autoencoder-based-Outlier-Detection: it uses outlier
labels of a validation split to pick the epoch, k and the seed, so its rows must always be reported under their
own name ("apre (paper protocol)") and never mixed with the label-free rows.

- Split (``data_pre.py``/``libs/data.py``): inliers and outliers shuffled separately with seed 42, each split
  50/25/25 into train/valid/test; the fit set is train + valid (valid is trained on), z-scored with its mean
  and unbiased std; the test split is never trained on and never a reference.
- Targets: valid rows take their rows of the offline fit-set shift X(m) (self-inclusive); test rows are
  shifted as new points against the fit-set levels.
- Step 1: seeds {0, 10, 20, 30, 40}; after every epoch, the validation ROC-AUC of MSS-WNLL for every m in
  {1, 2, 3} and k in {2..min(100, n_fit - 1)}; each (m, k) keeps its best-epoch validation scores, which are
  min-max normalised and averaged over seeds; ``k*_m`` = the k whose averaged scores have the best AUC.
- Step 2: seeds 0..19; for each target (plain; MSS m = 1, 2, 3 at ``k*_m``) keep the weights of the epoch with
  the best validation AUC, score the test split; report the test ROC-AUC (and AP) of the seed with the highest
  best-validation AUC.

Everything is vectorised over the (m, k) grid and runs full batch. It is expensive (5 x 5000 epochs with
297 validation AUCs per epoch, then 20 x 5000 epochs); ``epochs``, the seed lists, ``k_max`` and
``fit_cap`` exist to make smaller runs possible and must be reported when changed.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from aeguard.plugins.apre.torch_model import ProbabilisticAutoEncoder, pre_loss, pre_terms
from aeguard.plugins.mss import shift_fit_set, shift_points

#: row label the benchmark uses for this protocol's results
ROW_NAME = "apre (paper protocol)"


def paper_split(y: np.ndarray, seed: int = 42, ratios: tuple[float, float, float] = (0.5, 0.25, 0.25)
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices ``(train, valid, test)`` as the authors' ``load_data`` draws them (labels 1 = outlier)."""
    rs = np.random.RandomState(seed)
    y = np.asarray(y).ravel()
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        rs.shuffle(idx)
        n = len(idx)
        pos = np.arange(n)
        parts[0].append(idx[pos < ratios[0] * n])
        parts[1].append(idx[(pos >= ratios[0] * n) & (pos < (ratios[0] + ratios[1]) * n)])
        parts[2].append(idx[pos >= (ratios[0] + ratios[1]) * n])
    out = []
    for chunks in parts:
        rows = np.concatenate(chunks)
        out.append(rows[rs.choice(len(rows), len(rows), replace=False)])
    return out[0], out[1], out[2]


def _auc_rows(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ROC-AUC of every row of ``scores`` (T x n) at once (Mann-Whitney with average ranks for ties)."""
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.full((scores.shape[0],), float("nan"), dtype=torch.float64)
    s = scores.double()
    order = torch.argsort(s, dim=1)
    sorted_s = torch.gather(s, 1, order)
    ranks_sorted = torch.arange(1, s.shape[1] + 1, dtype=torch.float64).expand_as(s).clone()
    # average ranks over runs of equal scores
    new_run = torch.ones_like(sorted_s, dtype=torch.bool)
    new_run[:, 1:] = sorted_s[:, 1:] != sorted_s[:, :-1]
    run_id = torch.cumsum(new_run.long(), dim=1) - 1
    run_sum = torch.zeros_like(ranks_sorted).scatter_add_(1, run_id, ranks_sorted)
    run_cnt = torch.zeros_like(ranks_sorted).scatter_add_(1, run_id, torch.ones_like(ranks_sorted))
    avg = torch.gather(run_sum / run_cnt.clamp(min=1), 1, run_id)
    ranks = torch.empty_like(avg).scatter_(1, order, avg)
    pos_rank_sum = (ranks * labels.double()).sum(dim=1)
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _scores(model: ProbabilisticAutoEncoder, z: torch.Tensor, targets: torch.Tensor, alpha: float,
            beta: float) -> torch.Tensor:
    """APRE(alpha, beta) of ``z`` against each of T targets (T x n x d) -> T x n."""
    mu, s2 = model(z)
    err, unc = pre_terms(mu.unsqueeze(0), s2.unsqueeze(0), targets, alpha, beta)
    return err.sum(dim=2) + unc.sum(dim=2)


def _train(seed: int, d: int, z_fit: torch.Tensor, z_val: torch.Tensor, y_val: torch.Tensor,
           val_targets: torch.Tensor, epochs: int, alpha: float, beta: float, keep: str) -> dict[str, Any]:
    """One authors'-style training run that tracks, per target, the best validation AUC over epochs.

    ``keep="scores"`` keeps each target's best-epoch validation scores (step 1); ``keep="models"`` keeps each
    target's best-epoch weights (step 2).
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = ProbabilisticAutoEncoder(d, alpha=alpha, beta=beta)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1000, gamma=0.5)
    n_t = val_targets.shape[0]
    best_auc = torch.zeros(n_t, dtype=torch.float64)
    best_scores = torch.zeros(n_t, z_val.shape[0], dtype=torch.float64)
    best_models: list[dict[str, torch.Tensor] | None] = [None] * n_t
    for _ in range(epochs):
        model.train()
        mu, s2 = model(z_fit)
        loss = pre_loss(mu, s2, z_fit)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            scores = _scores(model, z_val, val_targets, alpha, beta)
            aucs = _auc_rows(scores, y_val)
        better = aucs > best_auc
        if bool(better.any()):
            best_auc = torch.where(better, aucs, best_auc)
            if keep == "scores":
                best_scores[better] = scores[better].double()
            else:
                state = copy.deepcopy(model.state_dict())
                for i in torch.nonzero(better).flatten().tolist():
                    best_models[i] = state
    return {"best_auc": best_auc, "best_scores": best_scores, "best_models": best_models}


def _minmax(s: torch.Tensor) -> torch.Tensor:
    lo, hi = s.min(dim=-1, keepdim=True).values, s.max(dim=-1, keepdim=True).values
    return (s - lo) / (hi - lo)


def run_paper_protocol(X: np.ndarray, y: np.ndarray, *, epochs: int = 5000, alpha: float = 0.5, beta: float = 2.0,
                       step1_seeds: tuple[int, ...] = (0, 10, 20, 30, 40),
                       step2_seeds: tuple[int, ...] = tuple(range(20)), k_max: int = 100,
                       ms: tuple[int, ...] = (1, 2, 3), split_seed: int = 42,
                       fit_cap: int | None = None) -> dict[str, Any]:
    """Run the authors' label-assisted protocol on ``(X, y)``; returns test AUC/AP per target and the choices.

    Result keys: ``rows`` (``{"non-MSS": {...}, "MSS1": {...}, ...}`` each with ``roc_auc``, ``ap``, ``seed``,
    ``k``), ``k_star`` (per m), ``settings`` and ``seconds``. ``fit_cap`` (aeguard, off by default) subsamples
    the fit set (seeded) for very large data and must be reported when used.
    """
    from aeguard.core.metrics import average_precision, roc_auc

    started = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).ravel().astype(int)
    tr, va, te = paper_split(y, split_seed)
    fit_rows = np.concatenate([tr, va])
    n_tr = len(tr)
    if fit_cap is not None and len(fit_rows) > fit_cap:
        keep = np.sort(np.random.RandomState(split_seed).choice(len(fit_rows), fit_cap, replace=False))
        n_tr = int((keep < n_tr).sum())
        fit_rows = fit_rows[keep]
    x_fit = X[fit_rows]
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0, ddof=1)
    z_fit = (x_fit - mean) / (std + 1e-5)
    z_test = (X[te] - mean) / (std + 1e-5)
    y_val, y_test = y[fit_rows[n_tr:]], y[te]
    n_fit, d = z_fit.shape
    ks = list(range(2, min(k_max + 1, n_fit)))
    if not ks:
        raise ValueError(f"the paper protocol needs at least 3 fit rows, got {n_fit}")
    m_max = max(ms)
    levels = {k: shift_fit_set(z_fit, k, m_max) for k in ks}
    # validation targets, ordered (m, k)
    val_t = np.stack([levels[k][m][n_tr:] for m in ms for k in ks])
    zf = torch.as_tensor(z_fit, dtype=torch.float32)
    zv = zf[n_tr:]
    yv = torch.as_tensor(y_val)
    vt = torch.as_tensor(val_t, dtype=torch.float32)

    # step 1: pick k per m from min-max normalised best-epoch validation scores averaged over seeds
    acc = torch.zeros(vt.shape[0], zv.shape[0], dtype=torch.float64)
    for seed in step1_seeds:
        run = _train(seed, d, zf, zv, yv, vt, epochs, alpha, beta, keep="scores")
        acc += _minmax(run["best_scores"])
    acc /= len(step1_seeds)
    aucs = _auc_rows(acc, yv).reshape(len(ms), len(ks))
    k_star = {m: ks[int(torch.argmax(aucs[i]))] for i, m in enumerate(ms)}
    t1 = time.perf_counter() - started

    # step 2: targets plain + MSS m at k*_m; best-validation-epoch weights; the seed with the best validation AUC
    names = [f"MSS{m}" for m in ms] + ["non-MSS"]
    val2 = np.stack([levels[k_star[m]][m][n_tr:] for m in ms] + [z_fit[n_tr:]])
    test2 = [shift_points(z_test, levels[k_star[m]][:m], k_star[m]) for m in ms] + [z_test]
    vt2 = torch.as_tensor(val2, dtype=torch.float32)
    zt = torch.as_tensor(z_test, dtype=torch.float32)
    best = {name: (-1.0, None, None) for name in names}
    for seed in step2_seeds:
        run = _train(seed, d, zf, zv, yv, vt2, epochs, alpha, beta, keep="models")
        for i, name in enumerate(names):
            val_auc = float(run["best_auc"][i])
            if val_auc > best[name][0] and run["best_models"][i] is not None:
                model = ProbabilisticAutoEncoder(d, alpha=alpha, beta=beta)
                model.load_state_dict(run["best_models"][i])
                model.eval()
                with torch.no_grad():
                    s = _scores(model, zt, torch.as_tensor(test2[i], dtype=torch.float32)[None], alpha, beta)[0]
                best[name] = (val_auc, seed, s.double().numpy())
    rows = {}
    for i, name in enumerate(names):
        val_auc, seed, s = best[name]
        rows[name] = {"roc_auc": roc_auc(y_test, s), "ap": average_precision(y_test, s),
                      "valid_auc": val_auc, "seed": seed, "k": k_star.get(ms[i]) if i < len(ms) else None}
    return {"rows": rows, "k_star": k_star, "seconds": {"step1": t1, "total": time.perf_counter() - started},
            "settings": {"epochs": epochs, "alpha": alpha, "beta": beta, "step1_seeds": list(step1_seeds),
                         "step2_seeds": list(step2_seeds), "k_max": k_max, "ms": list(ms),
                         "split_seed": split_seed, "fit_cap": fit_cap, "n_fit": n_fit, "n_test": len(te)}}


#: benchmark row name of each target, mirroring the label-free spec names
ROW_NAMES = {"MSS1": ROW_NAME, "MSS2": "apre(mss_m=2) (paper protocol)", "MSS3": "apre(mss_m=3) (paper protocol)",
             "non-MSS": "apre(mss=false) (paper protocol)"}


def paper_protocol_rows(dataset: str, X: np.ndarray, y: np.ndarray, **kwargs: Any) -> list[dict[str, Any]]:
    """Benchmark rows for one dataset, one per target, named by :data:`ROW_NAMES` (MSS m = 1, the default of
    the label-free ``apre``, is :data:`ROW_NAME`). Each row carries the chosen seed, k and validation AUC."""
    from aeguard.core.deep import torch_threads

    with torch_threads():  # small MLPs: intra-op threads only spin on a busy CPU
        out = run_paper_protocol(X, y, **kwargs)
    return [{"dataset": dataset, "detector": ROW_NAMES.get(target, f"{ROW_NAME} {target}"), "roc_auc": r["roc_auc"],
             "ap": r["ap"], "seed": r["seed"], "k": r["k"], "valid_auc": r["valid_auc"],
             "n_fit": out["settings"]["n_fit"], "n_test": out["settings"]["n_test"],
             "seconds": out["seconds"]["total"]}
            for target, r in out["rows"].items()]
