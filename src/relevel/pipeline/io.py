"""Chunked JSONL outputs with an atomic commit point per chunk, and content hashes for cache keys."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

CHUNK_GLOB = "chunk-*.jsonl"


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file, fsync, rename: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # e.g. the disk is full: free what was written, and name the file (write() does not)
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    os.replace(tmp, path)


def write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChunkedOutputs:
    """A step's record outputs, one folder each, written as numbered chunk files.

    Chunk i is committed once every output folder holds `chunk-i.jsonl`. Each file is written to a temp
    name and renamed, so a SIGKILL leaves whole chunks only; a chunk redone after a kill overwrites its
    partial files, which makes resuming idempotent.
    """

    def __init__(self, step_dir: Path, names: Iterable[str]):
        self.dirs = {name: step_dir / name for name in names}
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)

    def is_committed(self, index: int) -> bool:
        return all((folder / chunk_name(index)).exists() for folder in self.dirs.values())

    def commit(self, index: int, records: Mapping[str, list[dict]]) -> None:
        unknown = set(records) - set(self.dirs)
        if unknown:
            raise ValueError(f"no declared output named {sorted(unknown)}; declared: {sorted(self.dirs)}")
        for name, folder in self.dirs.items():
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.get(name, ()))
            atomic_write_text(folder / chunk_name(index), lines)

    def write_all(self, records: Mapping[str, list[dict]], chunk_size: int) -> None:
        """Whole outputs at once (a step that cannot stream), still in chunks: readers expect them."""
        chunks = {name: list(batched(rows, chunk_size)) for name, rows in records.items()}
        for index in range(max((len(c) for c in chunks.values()), default=0)):
            self.commit(index, {name: c[index] if index < len(c) else [] for name, c in chunks.items()})

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for _ in read_records(folder)) for name, folder in self.dirs.items()}


def read_records(folder: Path) -> Iterator[dict]:
    """Every record of a chunked output, in chunk order."""
    for chunk in sorted(Path(folder).glob(CHUNK_GLOB)):
        with chunk.open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


def batched(items: Iterable, size: int) -> Iterator[list]:
    """itertools.batched arrived in Python 3.12; we support 3.11."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
