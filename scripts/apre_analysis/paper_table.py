"""The paper-protocol table of docs/apre.md: runs/paper rows beside the label-free rows of runs/ablation."""
import pandas as pd

p = pd.read_csv("runs/paper/protocol-paper-protocol.csv")
a = pd.read_csv("runs/ablation/results.csv")
lf = a.pivot_table(index="dataset", columns="detector", values="roc_auc", aggfunc="mean")
rows = ["| dataset | n_fit | row | test ROC-AUC | test AP | chosen seed | chosen k | validation ROC-AUC "
        "| label-free row, ROC-AUC (60/40, 5 seeds) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
match = {"apre (paper protocol)": "apre", "apre(mss_m=2) (paper protocol)": "apre(mss_m=2)",
         "apre(mss_m=3) (paper protocol)": "apre(mss_m=3)", "apre(mss=false) (paper protocol)": "apre(mss=false)"}
for r in p.itertuples():
    k = "–" if pd.isna(r.k) else int(r.k)
    rows.append(f"| {r.dataset} | {r.n_fit} | `{r.detector}` | {r.roc_auc:.3f} | {r.ap:.3f} | {r.seed} | {k} | "
                f"{r.valid_auc:.3f} | {lf.loc[r.dataset, match[r.detector]]:.3f} |")
print("\n".join(rows))
