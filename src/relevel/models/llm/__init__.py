"""LLM backends over any OpenAI-compatible endpoint: the client (pool, retries, cache), prompts, parsers."""
