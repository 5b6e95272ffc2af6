"""Faults outside relevel's control: a full disk, an output folder without write permission, corrupt model
weights, a run directory made by an older version of a step, an `--out` that is not a run's; and the run
directory's safety: nothing written outside it but the declared caches, no secret in anything it writes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CANARY_KEY, pair, relevel_cli, relevel_main, write_config, write_lines, write_tiny_run_config
from relevel.errors import RelevelError
from relevel.pipeline.io import read_records
from relevel.pipeline.runner import read_manifest

SHORT_ROWS, LONG_ROWS, CHUNK = 2000, 1000, 500


def growing_input(tmp_path: Path) -> Path:
    """Short rows, then long ones: the first chunk files fit under the size limit below, the later ones not."""
    rows = [pair(i, query=f"查询{i}") for i in range(1, SHORT_ROWS + 1)]
    rows += [pair(i, query=f"查询{i}", video_text="长" * 400)
             for i in range(SHORT_ROWS + 1, SHORT_ROWS + LONG_ROWS + 1)]
    return write_lines(tmp_path / "grow.jsonl", rows)


def file_size_limit(limit: int):
    """For preexec_fn: writes past `limit` bytes fail with EFBIG, as on a full disk (SIGXFSZ would kill)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def relevel_cli_unprivileged(*args) -> subprocess.CompletedProcess:
    """The command line without root's power to ignore file permissions (dropped with setpriv), so that a
    read-only folder is read-only to it."""
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*drop, sys.executable, "-m", "relevel", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


def assert_clear_error(result, *fragments: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in message, message


def test_a_full_disk_stops_naming_the_file_and_the_run_resumes(tmp_path):
    data = growing_input(tmp_path)
    config = write_config(tmp_path / "c.yaml", data, chunk_size=CHUNK)
    run_dir = tmp_path / "run"
    args = ("data", "validate", data, "--config", config, "--out", run_dir)
    full = relevel_cli(*args, preexec_fn=file_size_limit(150_000), timeout=300)
    assert_clear_error(full, f"{run_dir}/validate/records/chunk-00004.jsonl: the file is over the size limit",
                       "Committed chunks are kept", f"resume with: relevel data validate {data}")
    assert read_manifest(run_dir / "validate")["status"] == "running"
    assert not list((run_dir / "validate").rglob(".*.tmp"))  # the partial write was removed
    assert len(list(read_records(run_dir / "validate" / "records"))) == SHORT_ROWS

    resumed = relevel_cli(*args, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["id"] for r in read_records(run_dir / "validate" / "records")]
    assert ids == [f"grow:{i}" for i in range(1, SHORT_ROWS + LONG_ROWS + 1)]
    manifest = read_manifest(run_dir / "validate")
    assert manifest["resumes"] == 1 and manifest["metrics"]["items_resumed"] == SHORT_ROWS


def test_an_output_folder_without_write_permission_is_a_clear_error(tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [pair(i) for i in range(1, 30)])
    config = write_config(tmp_path / "c.yaml", data, chunk_size=10)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        denied = relevel_cli_unprivileged("data", "validate", data, "--config", config, "--out", locked / "run")
        assert_clear_error(denied, f"{locked / 'run'}: no permission to write there", "resume with:")
    finally:
        locked.chmod(0o755)
    assert relevel_cli("data", "validate", data, "--config", config, "--out", locked / "run").returncode == 0


def truncate(path: Path) -> Path:
    os.truncate(path, path.stat().st_size // 2)
    return path


def test_corrupt_model_files_stop_naming_the_file(tmp_path, tiny_run, tiny_base):
    from relevel.models.embedder import load_embedder
    from relevel.models.generator import load_generator
    from relevel.models.hf import load_pretrained
    from relevel.models.judge import load_judge

    def broken(step: str, file: str) -> tuple[Path, Path]:
        model = shutil.copytree(tiny_run.run_dir / step / "model", tmp_path / step)
        return model, truncate(model / file)

    cases = [(load_generator, *broken("generator", "decoder/model.safetensors")),
             (load_embedder, *broken("embed-real-s0", "model.safetensors")),
             (load_judge, *broken("judge", "classifier.joblib"))]
    base = shutil.copytree(tiny_base, tmp_path / "base")
    cases.append((lambda path: load_pretrained(str(path), __import__("transformers").AutoModel), base,
                  truncate(base / "model.safetensors")))
    for load, model, bad_file in cases:
        with pytest.raises(RelevelError, match=f"^{bad_file}: "):
            load(model)

    dev = tiny_run.root / "dev.jsonl"
    code, _, stderr = relevel_main("embed", "eval", "--config", tiny_run.config, "--model", tmp_path / "embed-real-s0",
                                   "--data", dev, "--out", tmp_path / "eval")
    assert code == 2 and "Traceback" not in stderr
    assert f"{tmp_path / 'embed-real-s0' / 'model.safetensors'}: truncated or corrupt model weights" in \
        " ".join(stderr.split())


def test_a_step_made_by_another_version_reruns_or_stops_as_configured(tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [pair(i) for i in range(1, 30)])
    run_dir = tmp_path / "run"
    for on_mismatch, expected_code in (("stop", 2), ("rerun", 0)):
        config = write_config(tmp_path / f"{on_mismatch}.yaml", data, chunk_size=10)
        config.write_text(config.read_text().replace("progress: false}", f"progress: false, on_version_mismatch: "
                                                                          f"{on_mismatch}}}"))
        assert relevel_main("data", "validate", data, "--config", config, "--out", run_dir)[0] == 0
        manifest_file = run_dir / "validate" / "manifest.json"
        old = {**json.loads(manifest_file.read_text()), "version": 0, "key": "made-by-version-0"}
        manifest_file.write_text(json.dumps(old))  # as an older relevel left it: its key differs too
        code, stdout, stderr = relevel_main("data", "validate", data, "--config", config, "--out", run_dir)
        assert code == expected_code, stderr
        if on_mismatch == "stop":
            assert f"{manifest_file}: step 'validate' was made by version 0 of its code" in " ".join(stderr.split())
            assert "runtime.on_version_mismatch: rerun" in " ".join(stderr.split())
            assert read_manifest(run_dir / "validate")["key"] == "made-by-version-0"  # nothing touched
        else:
            manifest = read_manifest(run_dir / "validate")
            assert manifest["version"] == 1 and manifest["status"] == "done" and manifest["resumes"] == 0
            assert len(list(read_records(run_dir / "validate" / "records"))) == 29


def test_out_must_be_a_new_or_empty_folder_or_a_run(tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [pair(1)])
    config = write_config(tmp_path / "c.yaml", data)
    a_file = write_lines(tmp_path / "notes.txt", ["my notes"])
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    for command in (("data", "validate", data), ("run",)):
        code, _, stderr = relevel_main(*command, "--config", config, "--out", a_file)
        assert code == 2 and f"--out {a_file}: this is a file" in " ".join(stderr.split())
        code, _, stderr = relevel_main(*command, "--config", config, "--out", other)
        assert code == 2 and "not empty and holds no relevel run" in " ".join(stderr.split())
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"] and a_file.read_text() == "my notes\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert relevel_main("run", "--config", config, "--out", empty, "--until", "stats")[0] == 0
    assert relevel_main("run", "--config", config, "--out", empty, "--until", "stats")[0] == 0  # a run: resumable


def test_a_run_writes_nothing_outside_its_folder_but_the_declared_caches(tiny_run):
    inputs = {tiny_run.config, *(tiny_run.root / f"{split}.jsonl" for split in ("train", "dev", "unlabeled"))}
    outside = [p for p in tiny_run.root.rglob("*") if p.is_file() and p not in inputs
               and tiny_run.run_dir not in p.parents]
    cache = tiny_run.root / "cache"
    assert outside and all(cache in p.parents for p in outside), outside  # HOME, TMPDIR and the cwd stay empty
    assert {p.relative_to(cache).parts[:2] for p in outside} <= {("libraries", "matplotlib"),
                                                                 ("libraries", "jieba")}, outside
    # jieba's dictionary cache is written there (it printed a traceback when its folder was missing)
    assert list((cache / "libraries" / "jieba").glob("jieba*.cache"))
    assert "Dump cache file failed" not in tiny_run.result.stderr


def test_an_api_key_never_reaches_the_run_directory_or_the_output(tiny_run, tiny_base, tmp_path, monkeypatch):
    assert CANARY_KEY not in tiny_run.result.stdout + tiny_run.result.stderr
    written = [p for p in tiny_run.root.rglob("*") if p.is_file()]
    assert len(written) > 100 and not [p for p in written if CANARY_KEY.encode() in p.read_bytes()]
    assert "RELEVEL_CANARY_KEY" in (tiny_run.run_dir / "config.yaml").read_text()  # the variable's name only

    # an LLM judge whose endpoint refuses: the error, the manifests and the logs name the endpoint, not the key
    monkeypatch.setenv("RELEVEL_CANARY_KEY", CANARY_KEY)
    config = write_tiny_run_config(tmp_path, tiny_base, extra="judge: {backend: llm, llm: {base_url: "
                                   "'http://127.0.0.1:9/v1', model: none, api_key_env: RELEVEL_CANARY_KEY, "
                                   f"max_retries: 0, timeout_s: 5, cache_dir: {tmp_path / 'llm-cache'}}}}}\n")
    code, stdout, stderr = relevel_main("run", "--config", config, "--out", tmp_path / "run", "--until", "judge")
    assert code == 2 and "LLM endpoint http://127.0.0.1:9/v1" in stderr, stderr
    assert CANARY_KEY not in stdout + stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and CANARY_KEY.encode() in p.read_bytes()]
