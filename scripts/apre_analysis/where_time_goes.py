"""Where the time of one label-free ``apre`` fit goes: training (epochs run, early stop), the MSS fit (fit-set
shift and the capped-reference threshold pass) and test scoring. Run with ``AEGUARD_TRAIN_CACHE`` unset."""

import json
import sys
import time
from pathlib import Path

import numpy as np

from aeguard.benchmark.protocol import make_split
from aeguard.core import registry


def profile(dataset: str, data_dir: str = "../shared/data/odds") -> dict:
    data = np.load(f"{data_dir}/{dataset}.npz")
    X, y = data["X"], data["y"]
    X_fit, X_test, _, _ = make_split(X, y, 0)
    det = registry.create("apre", random_state=0)
    started = time.perf_counter()
    det.fit(X_fit)
    fit = time.perf_counter() - started
    started = time.perf_counter()
    det.decision_function(X_test)
    score = time.perf_counter() - started
    history, mss = det.history_, det.mss_.summary()
    return {"dataset": dataset, "n_fit": len(X_fit), "d": X.shape[1], "n_test": len(X_test), "fit_s": round(fit, 2),
            "train_s": history["train_seconds"], "epochs_run": history["epochs_run"],
            "stopped_early": history["stopped_early"], "mss_seconds": mss["seconds"], "k": mss.get("k"),
            "n_ref": mss.get("n_ref"), "score_s": round(score, 2)}


if __name__ == "__main__":
    rows = []
    for name in sys.argv[1:]:
        rows.append(profile(name))
        print(json.dumps(rows[-1]), flush=True)
    Path("runs/profile").mkdir(parents=True, exist_ok=True)
    Path("runs/profile/where_time_goes.json").write_text(json.dumps(rows, indent=1))
