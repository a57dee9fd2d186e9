"""Image data files and anomaly-map pictures (torch-free; Pillow imported only where PNGs are read).

Readers, shared by ``aeguard fit/score/explain``, ``aeguard-edge score/watch`` and ``POST /score_images``:

- ``.npz`` whose ``X`` is an (N, C, H, W) or (N, H, W) array (optional ``y``): :func:`read_image_npz`;
- a folder of PNG files, read in sorted file-name order: :func:`read_png_folder`. Grayscale (mode ``L``, or
  ``1``) gives C = 1, RGB (or palette ``P``) gives C = 3; every file must have the same size and channel count
  (else a clear error naming the odd file). 16-bit and alpha images are refused rather than silently converted.

PNGs are returned as uint8, so their pixel range is 0-255 without being stated. Pictures of contribution maps
(:func:`save_map_png`) need matplotlib (the ``train`` extra).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Pillow modes read as they are (L, RGB) or converted losslessly (1 -> L, P -> RGB)
_MODES = {"L": "L", "1": "L", "RGB": "RGB", "P": "RGB"}


class ImageFileError(ValueError):
    """An image file or folder that cannot be read as one batch (names the file and the problem)."""


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in the train, serve and edge-images extras
        raise ImageFileError("reading PNG images needs Pillow: pip install pillow") from None
    return Image


def is_image_source(path: str | Path) -> bool:
    """A folder (of PNGs), a single ``.png``, or an ``.npz`` whose ``X`` has 3 or 4 dimensions."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".png":
        return True
    if path.suffix.lower() == ".npz" and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return "X" in data.files and data["X"].ndim in (3, 4)
        except (OSError, ValueError):
            return False
    return False


def decode_png(data: bytes, name: str = "image", size: tuple[int, int] | None = None) -> np.ndarray:
    """One PNG's bytes as a uint8 (C, H, W) array; anything but a readable 8-bit gray/RGB PNG is refused.

    ``size`` (width, height): refuse another size from the header, before any pixel is decoded (so an upload
    cannot make the server decode a huge image)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageFileError(f"{name}: not a PNG file (no PNG signature)")
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise ImageFileError(f"{name}: not a PNG file ({img.format})")
            if size is not None and tuple(img.size) != tuple(size):
                raise ImageFileError(f"{name}: image is {img.size[0]}x{img.size[1]}, this model takes "
                                     f"{size[0]}x{size[1]} images")
            img.load()
            mode = img.mode
            if mode not in _MODES:
                raise ImageFileError(f"{name}: PNG mode {mode!r} is not supported; save it as 8-bit grayscale "
                                     "(L) or RGB")
            arr = np.asarray(img.convert(_MODES[mode]) if mode != _MODES[mode] else img, dtype=np.uint8)
    except ImageFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise ImageFileError(f"{name}: cannot decode the PNG ({exc})") from None
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def stack_images(images: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """(C, H, W) arrays of one shape as an (N, C, H, W) batch; the first one that differs is named."""
    if not images:
        raise ImageFileError("no images")
    first = images[0].shape
    for img, name in zip(images, names):
        if img.shape != first:
            raise ImageFileError(f"{name}: image is {_describe(img.shape)}, but {names[0]} is {_describe(first)}; "
                                 "every image must have the same size and channels")
    return np.stack(images)


def _describe(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{w}x{h} {'grayscale' if c == 1 else 'RGB'}"


def png_files(folder: str | Path) -> list[Path]:
    """The ``*.png`` files of a folder (case-insensitive suffix), sorted by name; other files are ignored."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() == ".png"),
                  key=lambda p: p.name)


def read_png_files(paths: Sequence[Path]) -> np.ndarray:
    """PNG files as one uint8 (N, C, H, W) batch, in the given order."""
    return stack_images([decode_png(p.read_bytes(), p.name) for p in paths], [p.name for p in paths])


def read_png_folder(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """Every PNG of ``folder`` (sorted by name) as a uint8 (N, C, H, W) batch, and the file names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFileError(f"{folder} is not a folder")
    files = png_files(folder)
    if not files:
        raise ImageFileError(f"{folder}: no .png files in the folder")
    return read_png_files(files), [p.name for p in files]


def read_image_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` ((N, C, H, W) or (N, H, W), kept in its dtype) and the optional ``y`` of an ``.npz`` file."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data.files:
            raise ImageFileError(f"{path}: no array named 'X' (found {data.files})")
        X = data["X"]
        y = data["y"].reshape(-1) if "y" in data.files else None
    if X.ndim not in (3, 4):
        raise ImageFileError(f"{path}: X has shape {X.shape}; images are (N, C, H, W) or (N, H, W)")
    if y is not None and len(y) != len(X):
        raise ImageFileError(f"{path}: y has {len(y)} entries for {len(X)} images")
    return X, y


def read_images(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """An image source as (X, y or None, one name per image): a PNG folder, one ``.png``, or an image ``.npz``."""
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"data not found: {path}")
    if path.is_dir():
        X, names = read_png_folder(path)
        return X, None, names
    if path.suffix.lower() == ".png":
        return read_png_files([path]), None, [path.name]
    X, y = read_image_npz(path)
    return X, y, [f"{path.stem}[{i}]" for i in range(len(X))]


# --- pictures of contribution maps ------------------------------------------------------------------


def to_display(image: np.ndarray, pixel_range: Sequence[float]) -> np.ndarray:
    """A (C, H, W) image as an (H, W) or (H, W, 3) array in [0, 1] for plotting."""
    lo, hi = (float(v) for v in pixel_range)
    x = np.clip((np.asarray(image, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def save_map_png(image: np.ndarray, contrib: np.ndarray, path: str | Path, pixel_range: Sequence[float],
                 title: str = "") -> Path:
    """Input, per-pixel contribution map (summed over channels) and the map overlaid on the input, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = to_display(image, pixel_range)
    heat = np.asarray(contrib, dtype=np.float64).sum(axis=0)
    gray = "gray" if shown.ndim == 2 else None
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    axes[0].imshow(shown, cmap=gray, vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("input")
    im = axes[1].imshow(heat, cmap="inferno", interpolation="nearest")
    axes[1].set_title("contribution")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(shown, cmap=gray, vmin=0, vmax=1, interpolation="nearest")
    axes[2].imshow(heat, cmap="inferno", alpha=0.55, interpolation="nearest")
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_bar_png(names: Sequence[str], values: np.ndarray, path: str | Path, title: str = "", top: int = 10) -> Path:
    """A horizontal bar chart of the ``top`` largest contributions of one row (tables)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-np.abs(values))[:top][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    ax.barh([str(names[i]) for i in order], values[order], color="#c0392b")
    ax.set_xlabel("contribution to the score")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
