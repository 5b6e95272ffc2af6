"""LLM endpoint settings (pydantic only, so a config validates without importing the client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, ValidationInfo, field_validator, model_serializer

# How requests are sent, not what is asked: left out of the steps' cache keys.
TRANSPORT = ("base_url", "serve", "serve_timeout_s", "api_key_env", "concurrency", "requests_per_second",
             "timeout_s", "max_retries", "backoff_s", "cache_dir")


class LLMConfig(BaseModel):
    """One OpenAI-compatible chat endpoint: vLLM, SGLang, llama.cpp's server or a hosted API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="The endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1. With "
                          "`serve`, '{port}' in it stands for the port the started server listens on.")
    serve: tuple[str, ...] | None = Field(None, description="A command that starts an OpenAI-compatible server "
                                          "in each process that uses it, e.g. [vllm, serve, MODEL, --port, "
                                          "'{port}'] to run vLLM inside each Ray actor on a GPU node; it stops "
                                          "with that process. Null: base_url is a server that is already running.")
    serve_timeout_s: float = Field(600.0, gt=0, description="How long a started server may take to answer.")
    model: str = Field(description="Model name the server expects.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable that holds the "
                             "key (the key itself never goes in a config, manifest or log). Unset: no key, "
                             "as local servers expect.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature for judging and checking; query "
                               "synthesis uses the generator's own.")
    max_tokens: int = Field(256, gt=0, description="Longest answer, in tokens.")
    response_format: Literal["json_object", "json_schema", "llama_cpp_schema", "none"] = Field(
        "json_object", description="How answers are constrained: 'json_object' (JSON mode, widely supported), "
        "'json_schema' (OpenAI structured outputs with each task's schema: vLLM, SGLang, OpenAI), "
        "'llama_cpp_schema' (llama-cpp-python's json_object with a schema), 'none'. Answers are parsed strictly "
        "either way.")
    logprobs: bool = Field(True, description="Judge: read the level's probabilities from the answer's top "
                           "log-probabilities where the server returns them (else the answer's level only).")
    concurrency: int = Field(8, gt=0, description="Requests in flight at once.")
    requests_per_second: float | None = Field(None, gt=0, description="Rate limit (null: none).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(5, ge=0, description="Retries after 429, 5xx, timeouts, connection errors and "
                             "malformed responses, with exponential backoff.")
    backoff_s: float = Field(1.0, gt=0, description="First backoff; doubles per retry (with jitter).")
    parse_retries: int = Field(2, ge=0, description="Times an unparseable answer is asked again (with the "
                               "parse error shown to the model) before it counts as failed.")
    max_failure_rate: float = Field(0.05, ge=0, le=1, description="A step stops with an error when more of its "
                                    "answers than this stay unparseable after the retries.")
    cache_dir: Path | None = Field(None, description="On-disk response cache, keyed by (model, messages, "
                                   "sampling); null: the user cache dir. A killed run resumes without paying "
                                   "twice.")
    prompts_dir: Path | None = Field(None, description="Folder of Jinja templates that replace the built-in "
                                     "ones of the same name (judge.jinja, synthesize.jinja, order.jinja, ...).")

    @field_validator("cache_dir", "prompts_dir", mode="before")
    @classmethod
    def _relative_to_config(cls, value: Any, info: ValidationInfo) -> Any:
        base_dir = (info.context or {}).get("base_dir")
        if value is None or base_dir is None or Path(str(value)).expanduser().is_absolute():
            return value
        return Path(base_dir) / str(value)

    @model_serializer(mode="wrap")
    def _serialize(self, handler, info: SerializationInfo) -> dict:
        """For a cache key (context {"cache_key": True}): what changes the answers, with the prompt templates'
        content in place of their folder, and without the transport settings."""
        data = handler(self)
        if not (info.context or {}).get("cache_key"):
            return data
        from relevel.models.llm.prompts import Prompts

        data = {k: v for k, v in data.items() if k not in TRANSPORT and k != "prompts_dir"}
        return {**data, "prompts": Prompts(self.prompts_dir).fingerprint()}
