"""Models: small interfaces (judge, generator, embedder, llm) with thin backends."""
