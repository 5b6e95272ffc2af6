"""Prompts are Jinja templates in `relevel/prompts/`; a config's `llm.prompts_dir` overrides them by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2

from relevel.errors import ConfigError

BUILTIN = Path(__file__).resolve().parents[2] / "prompts"


class Prompts:
    def __init__(self, override_dir: Path | None = None):
        if override_dir is not None and not Path(override_dir).is_dir():
            raise ConfigError(f"llm.prompts_dir: no folder at {override_dir}")
        self.folders = [Path(override_dir)] if override_dir else []
        self.folders.append(BUILTIN)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(f) for f in self.folders]),
                                      undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                      autoescape=False)  # plain-text prompts, not HTML

    def messages(self, task: str, **variables) -> tuple[dict[str, str], ...]:
        """The chat for one task: the shared system message, then the task's template as the user turn."""
        try:
            system = self.env.get_template("system.jinja").render().strip()
            user = self.env.get_template(f"{task}.jinja").render(**variables).strip()
        except jinja2.TemplateError as exc:
            raise ConfigError(f"prompt template {task}.jinja: {exc}") from None
        return ({"role": "system", "content": system}, {"role": "user", "content": user})

    def fingerprint(self) -> str:
        """Hash of every template in effect: a changed prompt is a new cache key for the steps that use it."""
        digest = hashlib.sha256()
        for name in sorted(self.env.list_templates(extensions=["jinja"])):
            source, _, _ = self.env.loader.get_source(self.env, name)
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        return digest.hexdigest()[:16]
