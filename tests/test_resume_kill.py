"""A real subprocess killed with SIGKILL mid-step resumes with no lost and no duplicated record."""

import json
import signal
import subprocess
import sys
import time

from conftest import pair, relevel_cli, sigkill_when_file_appears, write_config, write_lines
from relevel.pipeline.io import read_records
from relevel.pipeline.runner import read_manifest

ROWS = 100_000
CHUNK = 500
BAD_ROWS = range(777, ROWS, 9_973)  # a few bad rows, so rejects are resumed too


def big_input(tmp_path):
    lines = [pair(i, query=f"查询{i % 997}", level=i % 4) for i in range(1, ROWS + 1)]
    for bad in BAD_ROWS:
        lines[bad] = '{"id": "broken'
    return write_lines(tmp_path / "big.jsonl", lines)


def outputs(run_dir):
    step = run_dir / "validate"
    return ([r["id"] for r in read_records(step / "records")],
            [(r["line"], r["reason"]) for r in read_records(step / "rejects")])


def test_sigkill_mid_step_then_resume_matches_uninterrupted_run(tmp_path):
    data = big_input(tmp_path)
    config = write_config(tmp_path / "c.yaml", data, chunk_size=CHUNK)
    args = ["data", "validate", data, "--config", config, "--on-error", "reject"]

    clean = relevel_cli(*args, "--out", tmp_path / "clean", timeout=300)
    assert clean.returncode == 0, clean.stderr
    expected_ids, expected_rejects = outputs(tmp_path / "clean")
    assert len(expected_ids) + len(expected_rejects) == ROWS and len(expected_rejects) == len(BAD_ROWS)

    killed_dir = tmp_path / "killed"
    process = sigkill_when_file_appears(killed_dir / "validate" / "records" / "chunk-00005.jsonl", *args,
                                        "--out", killed_dir, timeout=120)
    manifest = read_manifest(killed_dir / "validate")
    assert process.returncode == -signal.SIGKILL and manifest["status"] == "running", "not killed mid-step"
    partial_ids, _ = outputs(killed_dir)
    assert 0 < len(partial_ids) < len(expected_ids)

    resumed = relevel_cli(*args, "--out", killed_dir, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    ids, rejects = outputs(killed_dir)
    assert ids == expected_ids and len(set(ids)) == len(ids)
    assert rejects == expected_rejects
    manifest = read_manifest(killed_dir / "validate")
    assert manifest["status"] == "done" and manifest["resumes"] == 1
    assert manifest["metrics"]["items_resumed"] >= 5 * CHUNK
    assert manifest["counts"] == read_manifest(tmp_path / "clean" / "validate")["counts"]
    merged = [json.loads(line) for line in (killed_dir / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in merged] == expected_rejects


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    data = big_input(tmp_path)
    config = write_config(tmp_path / "c.yaml", data, chunk_size=CHUNK)
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "relevel", "data", "validate", str(data), "--config",
                                str(config), "--on-error", "reject", "--out", str(run_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a job started in the background (nohup … &) inherits SIGINT ignored, and
                               # Python then never raises KeyboardInterrupt: give the child a terminal's default
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    marker = run_dir / "validate" / "records" / "chunk-00002.jsonl"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Resume with: relevel data validate" in stderr.replace("\n", " ")
    resumed = relevel_cli("data", "validate", data, "--config", config, "--on-error", "reject", "--out", run_dir)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout
