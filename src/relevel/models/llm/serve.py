"""An OpenAI-compatible server that the process using it starts and stops (`llm.serve`).

On a GPU node each Ray actor can run its own vLLM (`serve: [vllm, serve, MODEL, --port, "{port}"]`, with
`num_gpus_per_actor: 1`): the model then lives next to the work, and no server has to be kept running
beside the cluster. relevel never imports vLLM; it runs the command, so any server works (llama.cpp's in
the tests). The server dies with the process that started it, even on SIGKILL (Linux's parent-death signal).
"""

from __future__ import annotations

import atexit
import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from relevel.errors import RelevelError

PORT = "{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the thread that started it dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class ManagedServer:
    """Starts `command` ('{port}' in it and in `base_url` replaced by a free port) and waits until
    `base_url`/models answers."""

    def __init__(self, command: Sequence[str], base_url: str, timeout_s: float = 600):
        port = str(free_port())
        self.base_url = base_url.replace(PORT, port)
        argv = [arg.replace(PORT, port) for arg in command]
        self._log = tempfile.TemporaryFile()  # already unlinked: nothing is left behind in the temp dir
        try:
            self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            raise RelevelError(f"llm.serve: cannot start {argv[0]!r} ({exc.strerror}); install the server (e.g. "
                               "pip install vllm) or point llm.base_url at a running one") from None
        atexit.register(self.stop)
        self._wait(timeout_s)

    def _wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RelevelError(f"llm.serve: the server exited with code {self.process.returncode} before "
                                   f"answering. Its last output:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.stop()
        raise RelevelError(f"llm.serve: no answer at {self.base_url}/models within {timeout_s:.0f} s "
                           f"(llm.serve_timeout_s). Its last output:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().decode(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        atexit.unregister(self.stop)
