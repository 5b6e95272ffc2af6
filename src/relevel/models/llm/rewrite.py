"""The content rewriter: an LLM turns a document's rich fields (title, OCR text, ASR transcript, tags) into
one concise text field that the document template renders."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from relevel.models.llm.client import ChatRequest, UsesLLMClient
from relevel.models.llm.config import LLMConfig
from relevel.models.llm.parse import TEXT_SCHEMA, text_of
from relevel.models.llm.prompts import Prompts


class ContentRewriter(UsesLLMClient):
    def __init__(self, llm: LLMConfig, max_chars: int):
        self.llm, self.max_chars = llm, max_chars
        self.prompts = Prompts(llm.prompts_dir)

    def rewrite(self, documents: Sequence[dict[str, str]], progress: bool = False) -> list[str | None]:
        """One text per document (its fields by name); None where the answer stayed unparseable (counted)."""
        requests = [ChatRequest(self.prompts.messages("rewrite", fields=fields, max_chars=self.max_chars),
                                schema=TEXT_SCHEMA) for fields in documents]
        return self.client.complete(requests, partial(text_of, max_chars=self.max_chars), progress,
                                    "rewriting content")
