"""Images end to end: (N, C, H, W) and (N, H, W) arrays through fit, score, explain, the ONNX artifact, data files,
the CLI, HTTP, the edge runtime and the benchmark, on scikit-learn's bundled 8x8 digits (real images, no
download) and small made-up sets where a property needs one (a constant border)."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest

from aeguard.core import registry
from aeguard.core.artifact import load_artifact, manifest_digest, read_manifest
from aeguard.plugins.ae.detector import AEDetector

FAST = {"epochs": 60, "epochs_per_step": 20}


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits as uint8 (N, 1, 8, 8) images (pixel counts 0-16 scaled to 0-255) and their classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8)[:, None], d.target


def digit_split(c: int = 0, n_fit: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit images of one digit; a test batch of held-out ones (label 0) and other digits (label 1)."""
    X, t = digits()
    own = X[t == c]
    other = X[t != c][::20]
    test = np.concatenate([own[n_fit:], other])
    return own[:n_fit], test, np.r_[np.zeros(len(own) - n_fit, int), np.ones(len(other), int)]


def image_detectors() -> list[str]:
    return [name for name, rec in registry.detectors().items() if "image" in rec.modalities]


def build(name: str, **params):
    from conftest import fast_params

    cls = registry.get(name).cls
    return registry.build_detector(name, {**fast_params(cls), **FAST, **params}, seed=0)


class ImageOnly(AEDetector):
    """An image-only detector (a plugin may declare one): tables are refused."""

    modalities = ("image",)


# --- records and refusals -------------------------------------------------------------------------


def test_every_record_states_the_modalities_its_class_enforces(example_plugin_installed):
    for name, record in registry.detectors().items():
        assert tuple(record.modalities) == tuple(record.cls.modalities), name
    assert {"ae", "apre", "ae+mss"} <= set(image_detectors())


def test_images_to_a_table_only_detector_and_tables_to_an_image_only_one_are_refused(tmp_path):
    X, _ = digits()
    with pytest.raises(ValueError, match=r"takes tables only .*got an image batch"):
        registry.build_detector("iforest", seed=0).fit(X[:50])
    with pytest.raises(ValueError, match=r"takes images only .*got a table"):
        ImageOnly(**FAST).fit(X[:50].reshape(50, -1))
    table_fit = AEDetector(**FAST, random_state=0).fit(X[:50].reshape(50, -1).astype(float))
    with pytest.raises(ValueError, match="AEDetector takes tables of 64 features, got an image batch"):
        table_fit.decision_function(X[:3])
    artifact = load_artifact(table_fit.save_artifact(tmp_path / "table"))  # one rule, one wording
    with pytest.raises(ValueError, match="artifact 'ae' takes tables of 64 features, got an image batch"):
        artifact.score(X[:3])
    image_fit = AEDetector(**FAST, random_state=0).fit(X[:50])
    image_artifact = load_artifact(image_fit.save_artifact(tmp_path / "image"))
    for call, owner in ((image_fit.decision_function, "AEDetector"), (image_artifact.score, "artifact 'ae'")):
        with pytest.raises(ValueError, match=rf"{owner} takes \(1, 8, 8\) \(C x H x W\) images: .* not a table"):
            call(X[:3].reshape(3, -1))


def test_bad_image_batches_are_refused_with_the_problem_named():
    X, _ = digits()
    det = build("ae").fit(X[:60])
    with pytest.raises(ValueError, match=r"wrong image shape: got \(C, H, W\) = \(1, 7, 8\)"):
        det.decision_function(X[:3, :, :7])
    with pytest.raises(ValueError, match="not a table"):
        det.decision_function(X[:3].reshape(3, -1))
    with pytest.raises(ValueError, match=r"outside the pixel range \[0, 255\]"):
        det.decision_function(X[:3].astype(float) * 2)
    with pytest.raises(ValueError, match=r"NaN or infinite pixel in image 1 at \(c=0, h=2, w=3\)"):
        bad = X[:3].astype(float)
        bad[1, 0, 2, 3] = np.nan
        det.decision_function(bad)
    with pytest.raises(ValueError, match=r"outside the pixel range \[0, 1\]"):  # floats default to [0, 1]
        AEDetector(**FAST).fit(X[:50].astype(np.float64))
    with pytest.raises(ValueError, match="pixel_range applies to image batches only"):
        AEDetector(**FAST).fit(X[:50].reshape(50, -1), pixel_range=(0, 255))


# --- fit / score / explain ------------------------------------------------------------------------


def test_fit_score_explain_on_nchw_and_nhw_and_a_stated_float_range():
    fit, test, y = digit_split()
    det = build("ae").fit(fit)
    assert det.image_shape_ == det.input_shape_ == (1, 8, 8) and det.n_features_in_ == 64
    assert det.feature_names_[:2] == ["c0_h0_w0", "c0_h0_w1"] and det.feature_names_[-1] == "c0_h7_w7"
    scores = det.decision_function(test)
    np.testing.assert_array_equal(scores, det.decision_function(test[:, 0]))  # (N, H, W) -> C = 1
    from aeguard.core.metrics import roc_auc

    assert roc_auc(y, scores) > 0.9  # other digits score higher than held-out zeros
    maps = det.explain_maps(test[:4])
    assert maps.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), scores[:4], rtol=1e-5)  # MSE terms sum to the score
    assert list(det.explain(test[:2]).columns) == det.feature_names_
    # the same pixels as floats with their range stated give the same model input, hence the same scores
    as_float = build("ae").fit(fit.astype(np.float64) / 255 * 16, pixel_range=(0, 16))
    np.testing.assert_allclose(as_float.decision_function(test / 255 * 16), scores, rtol=1e-4, atol=1e-4)


def test_rgb_images_are_standardized_per_channel():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 3, 6, 5), dtype=np.uint8)
    X[:, 2] //= 4  # a dark blue channel: its own mean and scale
    det = build("ae").fit(X)
    std = det.standardize_
    assert std.mean.shape == (3, 1, 1) and std.layout == "flat"
    x01 = X / 255.0
    np.testing.assert_allclose(std.mean.flatten().numpy(), x01.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std.scale.flatten().numpy(), x01.std(axis=(0, 2, 3), ddof=1) + 1e-5, rtol=1e-5)


def test_a_constant_border_cannot_dominate_the_score():
    """Per-pixel standardization gives a (nearly) constant border pixel a tiny scale, so a faint smudge there
    outscores any real defect (``apre.md`` section 7); per-channel standardization weighs it as the grey levels
    it is."""
    rng = np.random.default_rng(1)
    X = np.zeros((80, 1, 10, 10), dtype=np.uint8)
    X[:, 0, 2:8, 2:8] = rng.integers(60, 200, size=(80, 6, 6))  # textured centre, black border
    X[0, 0, 0, :] = 1  # one grey level of sensor noise on the border of one fit image
    probe = X[1:3].copy()
    probe[0, 0, 0, 0] = 20  # a faint smudge on the border
    probe[1, 0, 3:7, 3:7] = 255  # a real defect: a white blob in the centre
    images = build("ae").fit(X)
    s_img = images.decision_function(probe)
    assert s_img[0] < images.threshold_ < s_img[1]
    # the same detector on the flattened pixels (per-pixel statistics) ranks the smudge above the defect
    flat = build("ae").fit(X.reshape(80, -1).astype(float))
    s_flat = flat.decision_function(probe.reshape(2, -1).astype(float))
    assert s_flat[0] > 100 * flat.threshold_ and s_flat[0] > s_flat[1]


# --- artifacts and parity -------------------------------------------------------------------------


@pytest.mark.parametrize("name", image_detectors())
def test_onnx_parity_on_images_for_every_image_capable_detector(name, tmp_path):
    fit, test, _ = digit_split(3)
    det = build(name).fit(fit)
    art = load_artifact(det.save_artifact(tmp_path / name))
    assert art.modality == "image" and art.image_shape == (1, 8, 8)
    assert art.session.get_inputs()[0].shape == ["batch", 1, 8, 8]
    m = art.manifest
    assert m["format_version"] == 2 and m["input"] == {"modality": "image", "shape": [1, 8, 8],
                                                       "pixel_range": [0.0, 255.0]}
    assert m["preprocessing"]["type"] == "image_standardize" and len(m["preprocessing"]["mean"]) == 1
    ref = det.score_output(test)
    got = art.score(test)
    err = np.abs(got.score - ref.score).max() / max(1.0, np.abs(ref.score).max())
    assert err < 1e-5, err
    np.testing.assert_allclose(got.contrib, ref.contrib, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(art.predict(test), det.predict(test))
    np.testing.assert_allclose(art.explain_maps(test[:3]), det.explain_maps(test[:3]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"expects \(1, 8, 8\)"):
        art.score(np.zeros((2, 1, 8, 9), np.uint8))


def test_a_format_1_manifest_still_loads_as_a_table(tmp_path, table):
    X, _ = table
    path = AEDetector(**FAST, random_state=0).fit(X).save_artifact(tmp_path / "t")
    manifest = json.loads((path / "manifest.json").read_text())
    old = {k: v for k, v in manifest.items() if k not in ("input", "manifest_sha256")}
    old["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps({**old, "manifest_sha256": manifest_digest(old)}))
    art = load_artifact(path)
    assert read_manifest(path)["format_version"] == 1 and art.modality == "tabular" and art.input_shape == (6,)
    assert art.score(X[:5]).score.shape == (5,)


# --- data files, CLI, explain pictures, edge ------------------------------------------------------


def write_pngs(folder, images, prefix="img"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / f"{prefix}_{i:03d}.png")
    return folder


def test_png_folders_are_read_in_name_order_and_odd_files_are_named(tmp_path):
    from PIL import Image

    from aeguard.core.images import ImageFileError, decode_png, read_images

    X, _ = digits()
    gray = write_pngs(tmp_path / "gray", X[:5])
    (gray / "notes.txt").write_text("ignored: not a .png")
    got, y, names = read_images(gray)
    np.testing.assert_array_equal(got, X[:5])
    assert got.dtype == np.uint8 and y is None and names[0] == "img_000.png"
    rgb = np.random.default_rng(0).integers(0, 256, (3, 3, 4, 6), dtype=np.uint8)
    got, _, _ = read_images(write_pngs(tmp_path / "rgb", rgb))
    np.testing.assert_array_equal(got, rgb)
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(gray / "img_002b.png")
    with pytest.raises(ImageFileError, match=r"img_002b.png: image is 8x9 grayscale, but img_000.png is 8x8 "
                                             r"grayscale"):
        read_images(gray)
    (gray / "img_002b.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(gray / "img_009.png")
    with pytest.raises(ImageFileError, match="img_009.png: image is 8x8 RGB, but img_000.png is 8x8 grayscale"):
        read_images(gray)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(gray / "img_009.png")
    with pytest.raises(ImageFileError, match="img_009.png: PNG mode 'RGBA' is not supported"):
        read_images(gray)
    with pytest.raises(ImageFileError, match="x.png: not a PNG file"):
        decode_png(b"GIF89a...", "x.png")
    with pytest.raises(ImageFileError, match="no .png files"):
        read_images((tmp_path / "empty").mkdir() or tmp_path / "empty")


@pytest.fixture(scope="module")
def digit_artifact(tmp_path_factory):
    """`ae` fitted on PNGs of zeros by `aeguard fit` (the real CLI, in process), with the test images."""
    from typer.testing import CliRunner

    from aeguard.core.cli import app

    root = tmp_path_factory.mktemp("digits")
    fit, test, y = digit_split(0, 80)
    write_pngs(root / "fit", fit)
    write_pngs(root / "test", test)
    np.savez(root / "test.npz", X=test, y=y)
    result = CliRunner().invoke(app, ["fit", "ae", str(root / "fit"), "-o", str(root / "art"), "--seed", "0",
                                      "--param", "epochs=60", "--param", "epochs_per_step=20"])
    assert result.exit_code == 0, result.output
    return root, test, y


def test_cli_scores_png_folders_and_npz_alike_and_explain_writes_pictures(digit_artifact, capsys):
    import pandas as pd
    from typer.testing import CliRunner

    from aeguard.core.cli import app
    from aeguard.edge.cli import main as edge_main

    root, test, y = digit_artifact
    art = load_artifact(root / "art")
    expected = art.score(test).score
    runner = CliRunner()
    for data in ("test", "test.npz"):
        result = runner.invoke(app, ["score", str(root / "art"), str(root / data), "-o", str(root / f"{data}.csv")])
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(pd.read_csv(root / f"{data}.csv")["score"], expected, rtol=1e-6)
        with pytest.raises(SystemExit) as done:
            edge_main(["score", str(root / "art"), str(root / data), "-o", str(root / f"edge-{data}.csv")])
        assert done.value.code == 0
        np.testing.assert_allclose(pd.read_csv(root / f"edge-{data}.csv")["score"], expected, rtol=1e-6)
    result = runner.invoke(app, ["explain", str(root / "art"), str(root / "test"), "-o", str(root / "maps"),
                                 "--top", "3"])
    assert result.exit_code == 0, result.output
    pictures = sorted(p.name for p in (root / "maps").glob("*.png"))
    assert len(pictures) == 3 and pictures[0].startswith("001_img_")
    frame = pd.read_csv(root / "maps" / "contributions.csv")
    assert len(frame) == len(test) and list(frame.columns[:4]) == ["name", "score", "label", "probability"]
    np.testing.assert_allclose(frame.iloc[:, 4:].sum(axis=1), expected, rtol=1e-4)
    from PIL import Image

    with Image.open(root / "maps" / pictures[0]) as img:
        assert img.size[0] > 300  # a real picture, not an empty file


def test_explain_on_a_table_writes_bar_charts(tmp_path, table):
    from typer.testing import CliRunner

    from aeguard.core.cli import app

    X, _ = table
    AEDetector(**FAST, random_state=0).fit(X).save_artifact(tmp_path / "art")
    np.savez(tmp_path / "t.npz", X=X[:20])
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "art"), str(tmp_path / "t.npz"), "-o",
                                      str(tmp_path / "out"), "--flagged"])
    assert result.exit_code == 0, result.output
    flagged = int(load_artifact(tmp_path / "art").predict(X[:20]).sum())
    assert len(list((tmp_path / "out").glob("*.png"))) == flagged > 0


def test_edge_watch_scores_new_pngs_as_they_arrive(digit_artifact):
    import io
    import threading

    from aeguard.edge.cli import watch_folder

    root, test, _ = digit_artifact
    inbox = root / "inbox"
    write_pngs(inbox, test[:1], prefix="old")  # already there: not scored without --existing
    art = load_artifact(root / "art")
    out, err = io.StringIO(), io.StringIO()

    def camera():
        while not out.getvalue():  # the header is written once the folder's first listing is taken
            threading.Event().wait(0.02)
        (inbox / "new_000.tmp").write_bytes(b"\x89PNG\r\n\x1a\n half-written")  # not a .png: ignored
        write_pngs(inbox, test[5:7], prefix="new")

    thread = threading.Thread(target=camera)
    thread.start()
    assert watch_folder(art, inbox, out, err, interval=0.05, max_images=2) == 2
    thread.join()
    lines = out.getvalue().splitlines()
    assert lines[0] == "name,score,label,probability" and [x.split(",")[0] for x in lines[1:]] == [
        "new_000.png", "new_001.png"]
    np.testing.assert_allclose([float(x.split(",")[1]) for x in lines[1:]], art.score(test[5:7]).score, rtol=1e-6)


# --- HTTP: one real `bentoml serve` ---------------------------------------------------------------


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))).save(
        buf, format="PNG")
    return buf.getvalue()


def test_http_scores_json_images_and_png_uploads_in_order_with_maps(digit_artifact, tmp_path, table):
    pytest.importorskip("bentoml")
    import httpx

    from aeguard.serving.bench import LocalServer

    root, test, _ = digit_artifact
    X, _ = table
    AEDetector(**FAST, random_state=0).fit(X).save_artifact(tmp_path / "tab")
    art = load_artifact(root / "art")
    expected = art.score(test[:6])
    srv = LocalServer([f"digits={root / 'art'}", f"tab={tmp_path / 'tab'}"],
                      extra_args=["--max-rows", "8", "--max-body-bytes", "30000"])
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=60.0) as client:
            # JSON: C x H x W and H x W nests, explain gives the map as nested arrays
            for images in (test[:6].tolist(), test[:6, 0].tolist()):
                r = client.post("/score", json={"images": images, "explain": True})
                assert r.status_code == 200, r.text
                results = r.json()["results"]
                np.testing.assert_allclose([x["score"] for x in results], expected.score, rtol=1e-6)
                np.testing.assert_allclose(np.array([x["map"] for x in results]),
                                           expected.contrib.reshape(-1, 1, 8, 8), rtol=1e-5, atol=1e-6)
            # PNG uploads, one or many, answered in upload order (here: reversed)
            files = [("file", (f"p{i}.png", png_bytes(test[i]), "image/png")) for i in reversed(range(6))]
            r = client.post("/score_images", files=files, params={"explain": "true"})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose([x["score"] for x in r.json()["results"]], expected.score[::-1], rtol=1e-6)
            r = client.post("/score_images", files=[("one", ("a.png", png_bytes(test[0]), "image/png"))],
                            data={"threshold": "0"})
            assert r.status_code == 200 and r.json()["results"][0]["label"] == 1 and r.json()["threshold"] == 0
            # bad images answer 4xx naming the problem
            bad = {
                "wrong size": ([("file", ("big.png", png_bytes(np.zeros((1, 9, 8), np.uint8)), "image/png"))], 400,
                               "file 0 ('big.png'): image is 8x9, this model takes 8x8 images"),
                "not a PNG": ([("file", ("a.png", png_bytes(test[0]), "image/png")),
                               ("file", ("b.png", b"GIF89a....", "image/png"))], 400,
                              "file 1 ('b.png'): not a PNG file"),
                "channels": ([("file", ("rgb.png", png_bytes(np.zeros((3, 8, 8), np.uint8)), "image/png"))], 400,
                             "image is RGB, this model takes 1-channel images"),
                "too many": ([("file", (f"{i}.png", png_bytes(test[0]), "image/png")) for i in range(9)], 413,
                             "more than 8 images"),
            }
            bad["too large"] = ([("file", ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(40000), "image/png"))], 413,
                                "exceeds the limit of 30000 bytes")
            for what, (upload, status, message) in bad.items():
                r = client.post("/score_images", files=upload)
                assert r.status_code == status and message in r.json()["error"], (what, r.text)
            r = client.post("/score_images", files=[("file", ("a.png", png_bytes(test[0]), "image/png"))],
                            params={"model": "tab"})
            assert r.status_code == 400 and "takes tables of 6 features" in r.json()["error"]
            r = client.post("/score", json={"images": (test[:2] * 1.0 + 300).tolist()})
            assert r.status_code == 400 and "outside the pixel range [0, 255]" in r.json()["error"]
            r = client.post("/score", json={"rows": [[0.0] * 64]})
            assert r.status_code == 400 and "this model takes 1x8x8 (C x H x W) images" in r.json()["error"]
            r = client.post("/score", json={"images": test[:1].tolist(), "model": "tab"})
            assert r.status_code == 400 and "takes tables" in r.json()["error"]
            r = client.post("/score", json={"images": [[[3] * 7 + [True]] * 8]})
            assert r.status_code == 400 and "not true/false" in r.json()["error"]
    finally:
        srv.stop()


# --- benchmark: digits suite and --as-images ------------------------------------------------------


def test_digits_one_class_split_follows_the_protocol():
    from aeguard.benchmark.images import digits_task

    X, y, fit, test, classes = digits_task("sklearn-digits:3", seed=1)
    assert classes is None
    _, target = digits()
    assert set(target[fit]) == {3} and abs(len(fit) - 0.6 * (target == 3).sum()) <= 1
    assert not set(fit) & set(test)
    for k in range(10):  # 40 % of every class in the test split
        assert abs((target[test] == k).sum() - 0.4 * (target == k).sum()) <= 1
    np.testing.assert_array_equal(y[test], target[test] != 3)
    again = digits_task("sklearn-digits:3", seed=1)
    np.testing.assert_array_equal(again[2], fit)
    np.testing.assert_array_equal(again[3], test)
    assert not np.array_equal(digits_task("sklearn-digits:3", seed=2)[2], fit)


def test_digits_images_gives_the_cells_split_as_images():
    from aeguard.benchmark.images import digits_images, digits_task

    X, y, fit, test, _ = digits_task("sklearn-digits:3", seed=1)
    X_fit, X_test, y_test = digits_images("digit3", seed=1)
    assert X_fit.shape == (len(fit), 1, 8, 8) and X_test.shape == (len(test), 1, 8, 8)
    np.testing.assert_array_equal(X_fit.reshape(len(fit), -1), X[fit])
    np.testing.assert_array_equal(y_test, y[test])
    with pytest.raises(ValueError, match="digit0 .. digit9"):
        digits_images("without3", seed=1)


def test_held_out_class_protocol_fits_nine_digits_with_their_labels_and_runs_class_modes(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from aeguard.benchmark.images import digits_task
    from aeguard.core.cli import app

    X, y, fit, test, classes = digits_task("sklearn-digits-holdout:3", seed=1)
    _, target = digits()
    np.testing.assert_array_equal(classes, target)
    assert 3 not in set(target[fit]) and set(target[fit]) == set(range(10)) - {3} and not set(fit) & set(test)
    one_class_test = digits_task("sklearn-digits:3", seed=1)[3]
    np.testing.assert_array_equal(test, one_class_test)  # the same per-class 60/40 split as the one-class suite
    np.testing.assert_array_equal(y[test], target[test] == 3)
    out = tmp_path / "holdout"
    result = CliRunner().invoke(app, ["benchmark", "--suite", "digits-holdout", "--datasets", "without3",
                                      "--detectors", "mahalanobis(epochs=5),mahalanobis(epochs=5,class_mode=none),knn",
                                      "--seeds", "1", "--workers", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["status"]) == {"ok"}, rows["status"].tolist()
    run = json.loads((out / "run.json").read_text())
    assert run["protocol"]["held_out_class"] and run["suite"] == "digits-holdout"
    page = (out / "report.md").read_text()
    assert "held-out class" in page and "| detector | FPR at 95 % TPR |" in page
    # the class-conditional default and the single Gaussian differ: the classes reached the detector
    a, b = rows.set_index("detector").loc[["mahalanobis(epochs=5)", "mahalanobis(epochs=5,class_mode=none)"],
                                          "roc_auc"]
    assert a != b


def test_benchmark_digits_suite_and_as_images_run_image_and_flat_detectors_side_by_side(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from aeguard.core.cli import app

    runner = CliRunner()
    specs = "ae(epochs=200,epochs_per_step=50),knn"
    result = runner.invoke(app, ["benchmark", "--suite", "digits", "--datasets", "digit1", "--detectors", specs,
                                 "--seeds", "1", "--workers", "1", "--out", str(tmp_path / "digits"),
                                 "--report-to", str(tmp_path / "docs" / "digits.md"), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "digits" / "results.csv")
    assert set(rows["status"]) == {"ok"} and len(rows) == 2 and (rows["roc_auc"] > 0.8).all()
    assert (rows["n_fit"] == 109).all()  # 60 % of the 182 ones
    run = json.loads((tmp_path / "digits" / "run.json").read_text())
    assert run["images"]["shape"] == [1, 8, 8] and run["protocol"]["one_class"]
    page = (tmp_path / "docs" / "digits.md").read_text()
    assert "| detector | FPR at 95 % TPR | AUROC | AUPR-in | AUPR-out |" in page  # the OOD papers' four metrics
    assert rows["fpr95"].between(0, 1).all() and rows["aupr_in"].between(0, 1).all()
    # --as-images on a folder suite: the same pixels as a table, read as 1x8x8 images by `ae`
    X, t = digits()
    (tmp_path / "suite").mkdir()
    np.savez(tmp_path / "suite" / "ones.npz", X=X[t <= 1].reshape(-1, 64) / 255 * 16, y=(t[t <= 1] == 1).astype(int))
    args = ["benchmark", "--suite", str(tmp_path / "suite"), "--detectors", specs, "--seeds", "1", "--workers", "1",
            "--out", str(tmp_path / "as-images"), "--no-progress", "--as-images", "1x8x8"]
    result = runner.invoke(app, args)  # floats default to [0, 1]: the cell names the problem
    assert "outside the pixel range [0, 1]" in pd.read_csv(tmp_path / "as-images" / "results.csv")["status"][0]
    result = runner.invoke(app, [*args[:-2], "--out", str(tmp_path / "as-images-2"), "--as-images", "1x8x8",
                                 "--pixel-range", "0,16"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "as-images-2" / "results.csv")
    assert set(rows["status"]) == {"ok"}, rows["status"].tolist()
    result = runner.invoke(app, [*args[:-2], "--as-images", "1x7x8"])
    assert result.exit_code != 0 and "needs 56 features per row" in str(result.exception or result.output)


def test_mvtec_embeddings_run_as_a_tabular_suite(tmp_path):
    """ADBench's MVTec-AD ResNet-18 features (../shared/data/embeddings/mvtec-resnet18): a folder of .npz."""
    import pandas as pd
    from typer.testing import CliRunner

    from aeguard.core.cli import app
    from conftest import REPO

    folder = REPO.parent / "shared" / "data" / "embeddings" / "mvtec-resnet18"
    if not (folder / "toothbrush.npz").is_file():
        pytest.skip("embeddings folder ../shared/data/embeddings/mvtec-resnet18 not present")
    result = CliRunner().invoke(app, ["benchmark", "--suite", str(folder), "--datasets", "toothbrush",
                                      "--detectors", "knn", "--seeds", "1", "--workers", "1", "--out",
                                      str(tmp_path / "mvtec"), "--no-progress"])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "mvtec" / "results.csv").iloc[0]
    assert row["status"] == "ok" and row["n_fit"] + row["n_test"] == 102 and row["roc_auc"] > 0.6
