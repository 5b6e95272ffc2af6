"""Declared caches (AMENDMENTS, "CLI conventions") live in the user cache dir, outside every run directory:
relevel's own (converted base models, LLM responses) and those the libraries it uses would otherwise write
into the home folder or the temp dir (matplotlib's font list, torch's compile cache, jieba's dictionary)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

# environment variable -> its folder under cache_dir()/libraries; a user's own setting wins
LIBRARY_CACHES = {"MPLCONFIGDIR": "matplotlib", "TORCHINDUCTOR_CACHE_DIR": "torchinductor"}


def cache_dir() -> Path:
    """RELEVEL_CACHE_DIR, else the user cache dir."""
    return Path(os.environ.get("RELEVEL_CACHE_DIR") or user_cache_dir("relevel"))


def library_cache(name: str) -> Path:
    return cache_dir() / "libraries" / name


def route_library_caches() -> None:
    """Must run before matplotlib and torch are imported: they read these variables then."""
    for variable, name in LIBRARY_CACHES.items():
        os.environ.setdefault(variable, str(library_cache(name)))
