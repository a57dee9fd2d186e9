"""Built-in aeguard plugins, registered through the ``aeguard.plugins`` entry point like any other."""

from __future__ import annotations

from aeguard.core.hookspecs import hookimpl
from aeguard.core.registry import DetectorRecord

#: PyOD baselines served by one adapter: aeguard name -> (PyOD module:class, one-line description).
#: Kept here (not in the adapter module) so listing detectors imports neither scikit-learn nor PyOD.
PYOD_BASELINES: dict[str, tuple[str, str]] = {
    "iforest": ("pyod.models.iforest:IForest", "Isolation Forest (PyOD defaults)"),
    "ecod": ("pyod.models.ecod:ECOD", "Empirical-CDF outlier detection (PyOD)"),
    "copod": ("pyod.models.copod:COPOD", "Copula-based outlier detection (PyOD)"),
    "hbos": ("pyod.models.hbos:HBOS", "Histogram-based outlier score (PyOD)"),
    "knn": ("pyod.models.knn:KNN", "k-nearest-neighbour distance, k=5 (PyOD)"),
    "lof": ("pyod.models.lof:LOF", "Local outlier factor, k=20 (PyOD)"),
    "ocsvm": ("pyod.models.ocsvm:OCSVM", "One-class SVM, RBF kernel (PyOD)"),
    "pca": ("pyod.models.pca:PCA", "PCA reconstruction distance (PyOD)"),
}


@hookimpl
def aeguard_detectors() -> list[DetectorRecord]:
    records = [
        DetectorRecord(
            name="ae", target="aeguard.plugins.ae.detector:AEDetector",
            description="MLP autoencoder, MSE score (the baseline every spec compares with)",
            modalities=("tabular", "image"), mss_compatible=True,
        ),
        DetectorRecord(
            name="ae+mss", target="aeguard.plugins.mss:AEMSSDetector",
            description="MLP autoencoder scored against its kNN mean-shifted input (MSS-MSE)",
            modalities=("tabular", "image"), mss_compatible=True,
        ),
        DetectorRecord(
            name="apre", target="aeguard.plugins.apre.detector:APREDetector",
            description="Probabilistic AE (PRE-trained), WNLL score with mean-shift scoring (MSS-PAE)",
            modalities=("tabular", "image"), mss_compatible=True,
        ),
        # g's target is a class prototype, not the input, so a mean-shifted target means nothing: no MSS
        DetectorRecord(
            name="cbnet", target="aeguard.plugins.cbnet.detector:CBNetDetector",
            description=("CBNet-style converting AE + tiny classifier: distance to the nearest prototype + entropy "
                         "+ the input's distance to its prototype"),
            modalities=("tabular", "image"), accepts_classes=True, mss_compatible=False,
        ),
        # tabular score: a per-feature sum of errors against the target (fader.md section 5), so MSS applies
        DetectorRecord(
            name="fader", target="aeguard.plugins.fader.detector:FaderDetector",
            description="FADeR-style inpainting AE: one deterministic mask, skip connections attenuated by a "
                        "two-layer MLP",
            modalities=("tabular", "image"), mss_compatible=True,
        ),
        DetectorRecord(
            name="mahalanobis", target="aeguard.plugins.mahalanobis.detector:MahalanobisDetector",
            description="AE with linear latent: latent Mahalanobis distance + reconstruction error (Denouden et al.)",
            modalities=("tabular", "image"), accepts_classes=True, mss_compatible=True,
            fixed_params=(("mss", False),),  # mean-shift scoring is the `mahalanobis+mss` record
        ),
        DetectorRecord(
            name="mahalanobis+mss", target="aeguard.plugins.mahalanobis.detector:MahalanobisDetector",
            description="mahalanobis with its reconstruction term scored against the kNN mean-shifted input",
            modalities=("tabular", "image"), accepts_classes=True, mss_compatible=True,
            fixed_params=(("mss", True),),
        ),
        DetectorRecord(
            name="sae_ood", target="aeguard.plugins.sae_ood.detector:SAEOODDetector",
            description="SAE-feature OOD (aeguard scoring)",
            modalities=("tabular", "image"), accepts_classes=True, mss_compatible=True,
        ),
    ]
    records += [
        DetectorRecord(name=name, target="aeguard.plugins.pyod_baselines:PyODDetector", description=desc,
                       exports_onnx=True, fixed_params=(("algorithm", name),))
        for name, (_, desc) in PYOD_BASELINES.items()
    ]
    return records


@hookimpl
def aeguard_protocols() -> dict[str, str]:
    # the APRE authors' label-assisted choice of epoch, k and seed (docs/apre.md)
    return {"paper-protocol": "aeguard.plugins.apre.paper_protocol:paper_protocol_rows"}
