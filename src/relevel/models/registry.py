"""Backends registered by name ("module:Class") and imported only when used, so reading a config needs no
torch; a saved model folder names its backend in a small JSON file."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from relevel.errors import RelevelError


def import_backend(backends: dict[str, str], name: str, what: str) -> type:
    if name not in backends:
        raise RelevelError(f"unknown {what} backend {name!r}; known: {', '.join(backends)}")
    module, cls = backends[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_weights(folder: Path | str) -> None:
    """Every safetensors file in a model folder has a whole header and covers its tensors; else an error
    naming the file (transformers would fail later with a traceback that names none)."""
    from safetensors import SafetensorError, safe_open

    for weights in sorted(Path(folder).rglob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except SafetensorError as exc:
            raise RelevelError(f"{weights}: truncated or corrupt model weights ({exc}). Restore the file, or "
                               "for a model this run trained, delete its step folder and run again") from None


def saved_backend(path: Path, meta_name: str, what: str, how_to_make: str) -> str:
    """The backend named in `path/meta_name`; a clear error if the folder is not a saved model."""
    meta_file = Path(path) / meta_name
    if not meta_file.is_file():
        raise RelevelError(f"{path}: not a trained {what} (no {meta_name}); {how_to_make}")
    check_weights(path)
    try:
        return json.loads(meta_file.read_text(encoding="utf-8"))["backend"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise RelevelError(f"{meta_file}: unreadable {what} description ({exc})") from None
