"""Registry of the 31 ODDS multi-dimensional point datasets (http://odds.cs.stonybrook.edu).

``n``, ``d`` and ``n_outliers`` are the OFFICIAL ODDS figures, so a local copy that disagrees (the http file
has 19 extra rows) stays visible instead of quietly redefining the benchmark. ``sha256`` pins the exact bytes
that ``aeguard datasets fetch`` accepts from ``url`` (or from a mirror); ``None`` means no reference checksum
exists, so nothing is ever fetched unverified. The table was rendered once from the provenance MANIFEST.csv of
the curated ODDS copy and is kept as a literal, so importing it needs no data files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .paths import resolve_data_dir

#: Local file suffixes that count as "present", in lookup order (the converted ``.npz`` wins over ``.mat``).
LOCAL_SUFFIXES = (".npz", ".mat")


@dataclass(frozen=True)
class DatasetInfo:
    """One ODDS dataset: official shape, outlier count and where its canonical file comes from."""

    name: str
    n: int
    d: int
    n_outliers: int
    outlier_pct: float
    sha256: str | None
    url: str | None
    file_format: str
    source: str
    notes: str

    @property
    def filename(self) -> str:
        """File name that ``fetch`` writes and a mirror must serve: ``<name>.<file_format>``."""
        return f"{self.name}.{self.file_format}"


def _github_raw(repo: str, commit: str, path: str) -> str:
    """Commit-pinned raw URL, so the bytes (and therefore the checksum) cannot drift."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


ODDS: dict[str, DatasetInfo] = {
    "annthyroid": DatasetInfo(
        name="annthyroid",
        n=7200,
        d=6,
        n_outliers=534,
        outlier_pct=7.42,
        sha256="17a1012d005f2179eca3b87c0028eb5ca807794b359c33fa1f8ca5ac846c514f",
        url=_github_raw(
            "yzhao062/pyod", "2e9e5b2642d16930cac6b27cc0a8a5d6e3bb1bbc", "notebooks/data/annthyroid.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/annthyroid.mat @ 2e9e5b2",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "arrhythmia": DatasetInfo(
        name="arrhythmia",
        n=452,
        d=274,
        n_outliers=66,
        outlier_pct=14.6,
        sha256="e4d47e499591ae31e5d7f0cd983367092353eac240f48e14c9b36457edb3460d",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/arrhythmia.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/arrhythmia.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "breastw": DatasetInfo(
        name="breastw",
        n=683,
        d=9,
        n_outliers=239,
        outlier_pct=34.99,
        sha256="a2e3f7c7f61ddde87c4373f0c0539de996227b9659c70b3c227948ebf0c6062b",
        url=_github_raw(
            "yzhao062/pyod", "2e9e5b2642d16930cac6b27cc0a8a5d6e3bb1bbc", "notebooks/data/breastw.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/breastw.mat @ 2e9e5b2",
        notes=(
            "ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum. X is float64 "
            "(source dtype uint8, lossless cast)."
        ),
    ),
    "cardio": DatasetInfo(
        name="cardio",
        n=1831,
        d=21,
        n_outliers=176,
        outlier_pct=9.61,
        sha256="5e568b6a73711012c481fa6cc984ab9c68e9a4fa44d6aeb3b43efa381c3f695b",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/cardio.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/cardio.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "cover": DatasetInfo(
        name="cover",
        n=286048,
        d=10,
        n_outliers=2747,
        outlier_pct=0.96,
        sha256="39acf6da4d31f08c2c28dc047249d8cd8ccd9d6fc299d9b5a08874ac92290c98",
        url=_github_raw("Minqi824/ADBench", "fb4c8eb5dfde63ee5f7fe7788ee4ce52043ce65a", "datasets/cover.mat"),
        file_format="mat",
        source="Minqi824/ADBench datasets/cover.mat @ fb4c8eb",
        notes=(
            "ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum. X is float64 "
            "(source dtype int16, lossless cast)."
        ),
    ),
    "ecoli": DatasetInfo(
        name="ecoli",
        n=336,
        d=7,
        n_outliers=9,
        outlier_pct=2.68,
        sha256="d8863a3f8d8278e60c07842037d0cc0794017ea44e492f0d24d3fd266897846f",
        url=None,
        file_format="npz",
        source="rebuilt from UCI Ecoli (Beefeuteer/EcoliDataSetAnalysisAndPrediction ecoli.data @ c67d00d)",
        notes=(
            "REBUILT, not the ODDS file: the ODDS ecoli.mat (SHA-256 "
            "76886bf14f549680450a0720c58b461db965f8b762a5ab4d165c03bbdcb355fc) is corrupt (X all NaN, y all "
            "0), so it must not be fetched. Rebuilt from UCI Ecoli (source ecoli.data SHA-256 "
            "9de27a3b4b13312748023d170b6a2bff2b9c7e06437aad298d5c4017468bdd14): 336 rows in UCI order, the 7 "
            "numeric attributes, outliers = minority classes omL+imL+imS. sha256 is that of the rebuilt "
            "ecoli.npz; there is no public URL, only a mirror (AEGUARD_ODDS_MIRROR) holding that npz can "
            "serve it."
        ),
    ),
    "glass": DatasetInfo(
        name="glass",
        n=214,
        d=9,
        n_outliers=9,
        outlier_pct=4.21,
        sha256="2c506e6e1e2ca1e82a905d10a90773151ff812c4bd969c71a12db5b2bb6e7921",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/glass.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/glass.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "heart": DatasetInfo(
        name="heart",
        n=224,
        d=44,
        n_outliers=10,
        outlier_pct=4.46,
        sha256=None,
        url=None,
        file_format="mat",
        source="ODDS table only (ODDS distributes no heart.mat)",
        notes=(
            "MISSING, no reference checksum: heart is absent from the ODDS download list "
            "(OutlierDetectionJL/OutlierDetectionData.jl src/ODDS/ODDS.jl). The heart.mat files in "
            "KDDElab/RMKN and Chandan-IITI/LMKAD are UCI Cleveland (297x13), not SPECTF. Not rebuilt: the "
            "ODDS construction is undocumented. Official figures are the least certain of the table."
        ),
    ),
    "http": DatasetInfo(
        name="http",
        n=567479,
        d=3,
        n_outliers=2211,
        outlier_pct=0.39,
        sha256="eca6eada6f51060ae749f80afce8a846c1fe5679da803954a4005f97e39bd46c",
        url=_github_raw("Minqi824/ADBench", "fb4c8eb5dfde63ee5f7fe7788ee4ce52043ce65a", "datasets/http.mat"),
        file_format="mat",
        source="Minqi824/ADBench datasets/http.mat @ fb4c8eb",
        notes=(
            "ODDS 2016 MATLAB v7.3 export. Its SHA-256 (the sha256 field, of the file at url) differs from "
            "the current ODDS download checksum "
            "81d689cfec5407305ab98cd26794e2cefb3aef5a521bf9c59744107aabcaed7e. X/y equal the http copies in "
            "vatsalsharan/pidforest and ADBench 16_http.npz. The file has 567498 rows, 19 more than the "
            "official 567479; the 2211 outliers agree."
        ),
    ),
    "ionosphere": DatasetInfo(
        name="ionosphere",
        n=351,
        d=33,
        n_outliers=126,
        outlier_pct=35.9,
        sha256="8ac5dfa6f47db4acdfe10615489b7f7dd015d79d5b381ce641e72baca3cfefb0",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/ionosphere.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/ionosphere.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "letter": DatasetInfo(
        name="letter",
        n=1600,
        d=32,
        n_outliers=100,
        outlier_pct=6.25,
        sha256="f4a229b0e2a6b0c9157ce27fa760bcbac0f948cd690b2f5d51c120e5450f2195",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/letter.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/letter.mat @ 34f7996",
        notes=(
            "ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum. X is float64 "
            "(source dtype uint8, lossless cast)."
        ),
    ),
    "lympho": DatasetInfo(
        name="lympho",
        n=148,
        d=18,
        n_outliers=6,
        outlier_pct=4.05,
        sha256="031b907ecb50347720b08b38f8139d05635adeca9335a064d89d5569c27a5834",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/lympho.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/lympho.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "mammography": DatasetInfo(
        name="mammography",
        n=11183,
        d=6,
        n_outliers=260,
        outlier_pct=2.32,
        sha256="271ebb568314a856666d3504b4882e21b0ea6e1ba9e648ad256d572a36df597e",
        url=_github_raw(
            "yzhao062/pyod", "2e9e5b2642d16930cac6b27cc0a8a5d6e3bb1bbc", "notebooks/data/mammography.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/mammography.mat @ 2e9e5b2",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        n=7603,
        d=100,
        n_outliers=700,
        outlier_pct=9.21,
        sha256="9479e221f236684c09f3e11c7ad124725d34ecd301b9450425e8b113368413a6",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/mnist.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/mnist.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "mulcross": DatasetInfo(
        name="mulcross",
        n=262144,
        d=4,
        n_outliers=26214,
        outlier_pct=10.0,
        sha256="f64a10efb641229356e7ae06e8805f9025e1ce29a2b0abb1207447423746276b",
        url=None,
        file_format="mat",
        source="ODDS mulcross.mat (no retrievable copy found)",
        notes=(
            "MISSING locally. sha256 is the ODDS reference checksum, but no retrievable copy of mulcross.mat "
            "was found (phung025/orion datasets/mulcross.csv is a CSV, not the .mat). Synthetic data from "
            "the Rocke & Woodruff (1996) generator; not regenerated, since a new draw would not be the ODDS "
            "file. Fetch needs AEGUARD_ODDS_MIRROR; the checksum is verified."
        ),
    ),
    "musk": DatasetInfo(
        name="musk",
        n=3062,
        d=166,
        n_outliers=97,
        outlier_pct=3.17,
        sha256="50bbf414caceb66cfe6f6b1eb7c1ff7c6eb1e6d87173f7bb597ba55cd3dc5493",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/musk.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/musk.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "optdigits": DatasetInfo(
        name="optdigits",
        n=5216,
        d=64,
        n_outliers=150,
        outlier_pct=2.88,
        sha256="30c664cd6f3740a173277a27cd1028d471b06f0835a9902c9712749cec58c1c4",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/optdigits.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/optdigits.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "pendigits": DatasetInfo(
        name="pendigits",
        n=6870,
        d=16,
        n_outliers=156,
        outlier_pct=2.27,
        sha256="7bc32ac83b3d583443acea8b1342a54aaa59eaedb9996af405322f473f3c22bc",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/pendigits.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/pendigits.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "pima": DatasetInfo(
        name="pima",
        n=768,
        d=8,
        n_outliers=268,
        outlier_pct=34.9,
        sha256="b6a5be8d548b9293d6958beceb1c77055591714d25d40d957eba87808456468f",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/pima.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/pima.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "satellite": DatasetInfo(
        name="satellite",
        n=6435,
        d=36,
        n_outliers=2036,
        outlier_pct=31.64,
        sha256="6feac3112b9c14e1c3e60afc437f2f3d29dc1000119c9f950c628078778d6aa0",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/satellite.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/satellite.mat @ 34f7996",
        notes=(
            "ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum. X is float64 "
            "(source dtype uint8, lossless cast)."
        ),
    ),
    "satimage-2": DatasetInfo(
        name="satimage-2",
        n=5803,
        d=36,
        n_outliers=71,
        outlier_pct=1.22,
        sha256="95c37a07cea2cb201f6900d14f521510e10b6b2f0074c06ac46d3157440ec67b",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/satimage-2.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/satimage-2.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "seismic": DatasetInfo(
        name="seismic",
        n=2584,
        d=11,
        n_outliers=170,
        outlier_pct=6.58,
        sha256="97972f7f4661ebc9c50a90efd998a775d2cfa07197808e41b68402208f8e3fde",
        url=None,
        file_format="npz",
        source="derived from UCI seismic-bumps (vatsalsharan/pidforest data/siesmic.mat @ ee768d1)",
        notes=(
            "DERIVED, unverified: no ODDS seismic .mat is known. Built from the PIDForest copy of UCI "
            "seismic-bumps (2584x15, SHA-256 "
            "7e15cbbd8012aacaf78859206411b3325f79ec3e22c1e8732edbf042f1833693) by keeping the 11 numeric "
            "attributes (dropping seismic, seismoacoustic, shift, ghazard); y=1 is 'hazardous'. Matches the "
            "ODDS counts, but the column choice is inferred. sha256 is that of the derived seismic.npz; "
            "there is no public URL, only a mirror (AEGUARD_ODDS_MIRROR) can serve it."
        ),
    ),
    "shuttle": DatasetInfo(
        name="shuttle",
        n=49097,
        d=9,
        n_outliers=3511,
        outlier_pct=7.15,
        sha256="b6e396c92354d5dcf5036901e36dc58e2913f2d1a5e138c35a2bedf9c69db899",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/shuttle.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/shuttle.mat @ 34f7996",
        notes=(
            "ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum. X is float64 "
            "(source dtype int16, lossless cast)."
        ),
    ),
    "smtp": DatasetInfo(
        name="smtp",
        n=95156,
        d=3,
        n_outliers=30,
        outlier_pct=0.03,
        sha256="5b6d13dd23e8c5e4235081ea58b606df216a2b9b86e7f5403cde26f62dafc0d8",
        url=_github_raw(
            "yzhao062/pyod", "66ebe1d546cbe2d0ed9c8e1016180934be186833", "notebooks/data/smtp.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/smtp.mat @ 66ebe1d",
        notes="ODDS original .mat (MATLAB v7.3 (HDF5)); SHA-256 identical to the ODDS download checksum.",
    ),
    "speech": DatasetInfo(
        name="speech",
        n=3686,
        d=400,
        n_outliers=61,
        outlier_pct=1.65,
        sha256="193d85404c5aff8b33e7e0540a8be211a7c94948d1a33162ce500b7e526ea937",
        url=None,
        file_format="mat",
        source="ODDS speech.mat (no retrievable copy found)",
        notes=(
            "MISSING locally. sha256 is the ODDS reference checksum. Known copies (not pinned to a commit, 4 "
            "MiB or more): yzhao062/pyod pyod/data/speech.mat; Minqi824/ADBench datasets/speech.mat and "
            "36_speech.npz; KDDElab/RMKN speech.mat. Fetch needs AEGUARD_ODDS_MIRROR; the checksum is "
            "verified."
        ),
    ),
    "thyroid": DatasetInfo(
        name="thyroid",
        n=3772,
        d=6,
        n_outliers=93,
        outlier_pct=2.47,
        sha256="49155d7861b977e90808faf68343ff67a67f63090c2744d514dbb67ac68e7e33",
        url=_github_raw(
            "yzhao062/pyod", "2e9e5b2642d16930cac6b27cc0a8a5d6e3bb1bbc", "notebooks/data/thyroid.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/thyroid.mat @ 2e9e5b2",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "vertebral": DatasetInfo(
        name="vertebral",
        n=240,
        d=6,
        n_outliers=30,
        outlier_pct=12.5,
        sha256="84b50b055f118f54b5c976650ccd284ab7c1adee822f8b3eb517c7e2c890d15e",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/vertebral.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/vertebral.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "vowels": DatasetInfo(
        name="vowels",
        n=1456,
        d=12,
        n_outliers=50,
        outlier_pct=3.43,
        sha256="51d5397bad1ceeda22b7cd44fd58125c5d603c9c2edb53aa59933330e259ac7b",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/vowels.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/vowels.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "wbc": DatasetInfo(
        name="wbc",
        n=378,
        d=30,
        n_outliers=21,
        outlier_pct=5.56,
        sha256="afe6b26953cc196b9a480318c903e0edef22529c2f61bd02082438c6e70630a7",
        url=_github_raw(
            "yzhao062/pyod", "34f7996effac700a5166d882d5e94c6e6078fae3", "notebooks/data/wbc.mat"
        ),
        file_format="mat",
        source="yzhao062/pyod notebooks/data/wbc.mat @ 34f7996",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "wine": DatasetInfo(
        name="wine",
        n=129,
        d=13,
        n_outliers=10,
        outlier_pct=7.75,
        sha256="d1b7cc643379e14397ee25bc1125ba08e4c929f2ec44d8782b1340d7045d4cf7",
        url=_github_raw("Minqi824/ADBench", "fb4c8eb5dfde63ee5f7fe7788ee4ce52043ce65a", "datasets/wine.mat"),
        file_format="mat",
        source="Minqi824/ADBench datasets/wine.mat @ fb4c8eb",
        notes="ODDS original .mat (MATLAB v5); SHA-256 identical to the ODDS download checksum.",
    ),
    "yeast": DatasetInfo(
        name="yeast",
        n=1364,
        d=8,
        n_outliers=64,
        outlier_pct=4.69,
        sha256=None,
        url=None,
        file_format="mat",
        source="ODDS table only (ODDS distributes no yeast.mat)",
        notes=(
            "MISSING, no reference checksum: yeast is absent from the ODDS download list "
            "(OutlierDetectionJL/OutlierDetectionData.jl src/ODDS/ODDS.jl). ADBench 47_yeast.npz is a "
            "different construction (1484x8, 507 outliers) and must not be substituted. Not rebuilt: the "
            "ODDS construction is undocumented."
        ),
    ),
}


def get_info(name: str) -> DatasetInfo:
    """Look up a dataset by (case-insensitive) name; unknown names fail with the closest matches."""
    info = ODDS.get(name.lower())
    if info is None:
        raise ValueError(unknown_names_message([name], ODDS))
    return info


def unknown_names_message(names: list[str], known: Iterable[str]) -> str:
    """Readable error for mistyped dataset names, with close matches and the full list of known names."""
    from difflib import get_close_matches

    known = sorted(known)
    parts = []
    for name in names:
        close = get_close_matches(name.lower(), known, n=3)
        parts.append(f"{name!r} (did you mean {', '.join(close)}?)" if close else repr(name))
    return f"unknown dataset(s): {', '.join(parts)}; known: {', '.join(known)}"


def find_local_file(name: str, data_dir: str | Path | None = None) -> Path | None:
    """Return ``<name>.npz`` or ``<name>.mat`` in the resolved data dir (npz first), or None."""
    folder = resolve_data_dir(data_dir)
    for suffix in LOCAL_SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def list_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """Registry rows with a ``present`` flag for the resolved data dir, JSON-serialisable for the CLI."""
    folder = resolve_data_dir(data_dir)
    return [
        {
            "name": info.name,
            "n": info.n,
            "d": info.d,
            "n_outliers": info.n_outliers,
            "outlier_pct": info.outlier_pct,
            "present": find_local_file(info.name, folder) is not None,
        }
        for info in ODDS.values()
    ]
