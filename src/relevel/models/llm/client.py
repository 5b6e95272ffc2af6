"""A chat client for any OpenAI-compatible endpoint: a bounded async pool, a rate limit, retries with backoff,
re-asking on unparseable answers, and an on-disk response cache so that a killed run resumes without paying
twice.

Why not the `openai` package's own retries: they are invisible, and the manifest must count retries by kind
(429, 5xx, timeout, connection, malformed) and answers that could not be parsed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
from tqdm.auto import tqdm

from relevel.caches import cache_dir
from relevel.errors import RelevelError
from relevel.models.llm.config import LLMConfig
from relevel.models.llm.serve import ManagedServer

T = TypeVar("T")
TOP_LOGPROBS = 10  # enough alternatives for every level of a 4-level scale and then some


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, str], ...]
    temperature: float | None = None  # None: the endpoint config's
    seed: int | None = None  # part of the cache key: two samples of one prompt differ by seed
    logprobs: bool = False
    schema: dict | None = None  # the answer's JSON schema, for endpoints that enforce one (llm.response_format)


@dataclass(frozen=True)
class TokenLogprobs:
    token: str
    alternatives: dict[str, float]  # top alternatives at this position (the token itself included)


@dataclass(frozen=True)
class ChatAnswer:
    content: str
    tokens: tuple[TokenLogprobs, ...] | None  # with logprobs, when the server returns them


class ParseError(ValueError):
    """An answer that does not say what the prompt asked for; the message is shown to the model on retry."""


@dataclass
class LLMStats:
    lookups: int = 0  # answers needed (re-asks after a parse error included)
    cache_hits: int = 0
    requests: int = 0  # sent to the server (retries included)
    answers: int = 0  # parsed answers returned
    failed: int = 0  # still unparseable after every retry
    retries: Counter = field(default_factory=Counter)  # by kind
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"lookups": self.lookups, "cache_hits": self.cache_hits,
                "cache_hit_rate": round(self.cache_hits / self.lookups, 4) if self.lookups else 0.0,
                "requests": self.requests,
                "answers": self.answers, "failed": self.failed, "retries": dict(self.retries),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    @classmethod
    def merged(cls, usages: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """The sum of several processes' `as_dict()` (one per engine worker)."""
        total = cls()
        for usage in usages:
            for name in ("lookups", "cache_hits", "requests", "answers", "failed", "prompt_tokens",
                         "completion_tokens"):
                setattr(total, name, getattr(total, name) + usage.get(name, 0))
            total.retries.update(usage.get("retries", {}))
        return total.as_dict()


class ResponseCache:
    """(model, messages, sampling) → answer, in SQLite: every answer is committed as it arrives."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, answer: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(answer, ensure_ascii=False)))
        self._db.commit()

    def close(self) -> None:
        self._db.close()


def default_cache_dir() -> Path:
    return cache_dir() / "llm"


class LLMClient:
    def __init__(self, config: LLMConfig):
        self.config = config
        self.stats = LLMStats()
        self._cache = ResponseCache((config.cache_dir or default_cache_dir()) / "responses.sqlite")
        self._server = ManagedServer(config.serve, config.base_url, config.serve_timeout_s) if config.serve else None
        self.base_url = self._server.base_url if self._server else config.base_url

    def close(self) -> None:
        self._cache.close()
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def complete(self, requests: Sequence[ChatRequest], parse: Callable[[ChatAnswer], T], progress: bool = False,
                 desc: str = "LLM") -> list[T | None]:
        """Each request's parsed answer, in order; None where it stayed unparseable (counted in `stats.failed`).
        `parse` raises ParseError on an answer that does not fit; the model is then asked again."""
        if not requests:
            return []
        return asyncio.run(self._complete_all(requests, parse, progress, desc))

    async def _complete_all(self, requests, parse, progress, desc):
        client = openai.AsyncOpenAI(base_url=self.base_url, timeout=self.config.timeout_s, max_retries=0,
                                    api_key=os.environ.get(self.config.api_key_env) or "no-key")
        pool = asyncio.Semaphore(self.config.concurrency)
        pacing = _Pacer(self.config.requests_per_second)
        try:
            with tqdm(total=len(requests), desc=desc, unit="req", disable=not progress, leave=False) as bar:
                async def one(request: ChatRequest):
                    async with pool:
                        result = await self._answer(client, pacing, request, parse)
                    bar.update(1)
                    return result

                return await asyncio.gather(*(one(r) for r in requests))
        finally:
            await client.close()

    async def _answer(self, client, pacing, request: ChatRequest, parse):
        messages = list(request.messages)
        for attempt in range(self.config.parse_retries + 1):
            answer = await self._chat(client, pacing, request, messages)
            try:
                value = parse(answer)
            except ParseError as exc:
                if attempt == self.config.parse_retries:
                    self.stats.failed += 1
                    return None
                self.stats.retries["parse"] += 1
                messages = [*messages, {"role": "assistant", "content": answer.content},
                            {"role": "user", "content": f"That answer could not be read: {exc}. Answer again, "
                             "exactly in the format asked for."}]
                continue
            self.stats.answers += 1
            return value

    def _cache_key(self, request: ChatRequest, messages: list[dict]) -> str:
        identity = {"model": self.config.model, "messages": messages, "temperature": self._temperature(request),
                    "max_tokens": self.config.max_tokens, "format": self._response_format(request),
                    "logprobs": request.logprobs, "seed": request.seed}
        return hashlib.sha256(json.dumps(identity, ensure_ascii=False, sort_keys=True).encode()).hexdigest()

    def _temperature(self, request: ChatRequest) -> float:
        return self.config.temperature if request.temperature is None else request.temperature

    async def _chat(self, client, pacing, request: ChatRequest, messages: list[dict]) -> ChatAnswer:
        key = self._cache_key(request, messages)
        self.stats.lookups += 1
        cached = self._cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return _answer_from_json(cached)
        kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                  "temperature": self._temperature(request), "max_tokens": self.config.max_tokens}
        if request.seed is not None:
            kwargs["seed"] = request.seed
        response_format = self._response_format(request)
        if response_format is not None:
            kwargs["response_format"] = response_format
        if request.logprobs:
            kwargs.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        for attempt in range(self.config.max_retries + 1):
            await pacing.wait()
            self.stats.requests += 1
            try:
                response = await client.chat.completions.create(**kwargs)
                answer = _answer_from_response(response)
            except RETRYABLE as exc:
                kind = retry_kind(exc)
                if attempt == self.config.max_retries:
                    raise RelevelError(f"LLM endpoint {self.base_url} (model {self.config.model}): still "
                                       f"failing after {attempt} retries, last error {kind}: {_short(exc)}. "
                                       "Answers so far are cached; run the command again to resume.") from None
                self.stats.retries[kind] += 1
                await asyncio.sleep(self._backoff(attempt, exc))
                continue
            except openai.APIStatusError as exc:  # 4xx other than 429: a wrong model name, URL or key
                raise RelevelError(f"LLM endpoint {self.base_url} refused the request "
                                   f"(HTTP {exc.status_code}): {_short(exc)}; check llm.base_url, llm.model and "
                                   f"the key in ${self.config.api_key_env}") from None
            usage = getattr(response, "usage", None)
            if usage is not None:
                self.stats.prompt_tokens += usage.prompt_tokens or 0
                self.stats.completion_tokens += usage.completion_tokens or 0
            self._cache.put(key, _answer_to_json(answer))
            return answer
        raise AssertionError("unreachable")

    def _response_format(self, request: ChatRequest) -> dict | None:
        mode = self.config.response_format
        if mode == "none":
            return None
        if mode == "json_object" or request.schema is None:
            return {"type": "json_object"}
        if mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "answer", "schema": request.schema}}
        return {"type": "json_object", "schema": request.schema}

    def _backoff(self, attempt: int, exc: Exception) -> float:
        retry_after = _retry_after(exc)
        delay = self.config.backoff_s * 2 ** attempt * (0.5 + random.random())  # jitter spreads the pool's retries
        return max(delay, retry_after or 0.0)


class UsesLLMClient:
    """A backend that asks the endpoint `self.llm`, connecting on first use; `usage()` feeds the manifest."""

    llm: LLMConfig
    _client: LLMClient | None = None

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(self.llm)
        return self._client

    def usage(self) -> dict:
        return self._client.stats.as_dict() if self._client is not None else {}


class MalformedResponse(Exception):
    """The server answered 200 but not with a chat completion (no choices, truncated JSON)."""


RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError,
             openai.APIResponseValidationError, json.JSONDecodeError, MalformedResponse)


def retry_kind(exc: Exception) -> str:
    if isinstance(exc, openai.RateLimitError):
        return "429"
    if isinstance(exc, openai.InternalServerError):
        return "5xx"
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    return "malformed"


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    try:
        return float(response.headers["retry-after"]) if response is not None else None
    except (KeyError, ValueError):
        return None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _answer_from_response(response) -> ChatAnswer:
    choices = getattr(response, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise MalformedResponse("no choices in the response")
    choice = choices[0]
    tokens = None
    content_logprobs = getattr(getattr(choice, "logprobs", None), "content", None)
    if content_logprobs:
        tokens = tuple(TokenLogprobs(t.token, {a.token: a.logprob for a in (t.top_logprobs or [])}
                                     | {t.token: t.logprob}) for t in content_logprobs)
    return ChatAnswer(choice.message.content or "", tokens)


def _answer_to_json(answer: ChatAnswer) -> dict:
    tokens = [[t.token, t.alternatives] for t in answer.tokens] if answer.tokens is not None else None
    return {"content": answer.content, "tokens": tokens}


def _answer_from_json(data: dict) -> ChatAnswer:
    tokens = tuple(TokenLogprobs(t, alts) for t, alts in data["tokens"]) if data.get("tokens") is not None else None
    return ChatAnswer(data["content"], tokens)


class _Pacer:
    """Spaces request starts at least 1/rate apart (a rate limit shared by the whole pool)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = asyncio.get_running_loop().time()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)
