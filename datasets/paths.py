"""Where the ODDS dataset files live.

One resolution rule shared by the CLI, the loaders and ``fetch`` so they never disagree about the folder:
an explicit ``--data-dir`` wins, then ``$AEGUARD_DATA``, then a per-user cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the dataset folder when no explicit directory is given.
DATA_ENV_VAR = "AEGUARD_DATA"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/aeguard/odds``, else ``~/.cache/aeguard/odds`` (XDG: ignore relative values)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path.home() / ".cache"
    return base / "aeguard" / "odds"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """Resolve the dataset folder: ``explicit`` > ``$AEGUARD_DATA`` > per-user cache (may not exist yet)."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser().absolute()
    from_env = os.environ.get(DATA_ENV_VAR, "")
    if from_env:
        return Path(from_env).expanduser().absolute()
    return default_cache_dir()
