"""Tables that render both in the terminal (rich) and in the Markdown report, from one definition."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Table:
    title: str
    columns: Sequence[str]
    rows: list[Sequence[object]] = field(default_factory=list)

    def to_markdown(self) -> str:
        def cell(value: object) -> str:
            return _format(value).replace("|", "\\|")

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def formatted_rows(self) -> list[list[str]]:
        return [[_format(v) for v in row] for row in self.rows]


def _format(value: object) -> str:
    if value is None:  # no value (e.g. the yield of a level nothing was requested for)
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def level_table(split: str, stats: dict) -> Table:
    rows = [[info["level"], name, info["count"], f"{100 * info['share']:.1f}%"]
            for name, info in stats["levels"].items()]
    return Table(f"Levels in {split} ({stats['pairs']} pairs)", ["level", "name", "pairs", "share"], rows)


def structure_table(stats_by_split: dict[str, dict]) -> Table:
    """One column per labelled split: how queries and documents are shared, duplicates, lengths."""
    metrics = [
        ("pairs", lambda s: s["pairs"]),
        ("distinct queries", lambda s: s["distinct_queries"]),
        ("distinct documents", lambda s: s["distinct_documents"]),
        ("pairs per query (mean / max)",
         lambda s: f"{s['pairs_per_query']['mean']:.2f} / {s['pairs_per_query']['max']}"),
        ("pairs per document (mean / max)",
         lambda s: f"{s['pairs_per_document']['mean']:.2f} / {s['pairs_per_document']['max']}"),
        ("documents with >= 2 queries", lambda s: f"{100 * s['pairs_per_document']['share_with_2_or_more']:.1f}%"),
        ("duplicate-query rate", lambda s: f"{100 * s['duplicate_query_rate']:.2f}%"),
        ("exact duplicate pairs", lambda s: s["exact_duplicate_pairs"]),
        ("query chars p50 / p90 / p99 / max", lambda s: _percentiles(s["query_chars"])),
        ("document chars p50 / p90 / p99 / max", lambda s: _percentiles(s["document_chars"])),
    ]
    splits = list(stats_by_split)
    rows = [[label, *(get(stats_by_split[split]) for split in splits)] for label, get in metrics]
    return Table("Pairs, queries and documents", ["", *splits], rows)


def documents_table(split: str, stats: dict) -> Table:
    return Table(f"Documents in {split}", ["documents", "distinct", "duplicates", "chars p50 / p90 / p99 / max"],
                 [[stats["documents"], stats["distinct_documents"], stats["duplicate_documents"],
                   _percentiles(stats["document_chars"])]])


def token_limit_table(rows: list[tuple[str, dict]]) -> Table:
    """(split, row of the stats step's `token_limits`) pairs: how many texts each model setting cuts."""
    return Table("Texts longer than a model's token limit (cut by the model)",
                 ["setting", "limit", "split", "texts", "tokens p50 / p90 / p99 / max", "cut", "share cut"],
                 [[r["setting"], r["limit"], split, r["texts"], _percentiles(r["tokens"]), r["cut"], r["share_cut"]]
                  for split, r in rows])


def _percentiles(p: dict[str, int]) -> str:
    return " / ".join(str(p[k]) for k in ("p50", "p90", "p99", "p100"))


def render_section(heading: str, blocks: list[Table | str]) -> str:
    """One `## heading` section of a report, as `write_report` writes it."""
    parts = [f"## {heading}\n"]
    parts += [block.to_markdown() if isinstance(block, Table) else block + "\n" for block in blocks]
    return "\n".join(parts)


def write_report(path: Path, title: str, sections: list[tuple[str, list[Table | str]]]) -> Path:
    """`path` (Markdown) and, beside it, the same report as one self-contained HTML page."""
    parts = [f"# {title}\n"] + [render_section(heading, blocks) for heading, blocks in sections]
    markdown = "\n".join(parts)
    path.write_text(markdown, encoding="utf-8")
    path.with_suffix(".html").write_text(report_html(title, markdown, path.parent), encoding="utf-8")
    return path


_IMAGE = re.compile(r'<img src="([^":]+\.png)"')
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;"
          "text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
          "img{max-width:100%}code{background:#f3f3f3;padding:0 .2rem}")


def report_html(title: str, markdown: str, base: Path) -> str:
    """The Markdown report as HTML with its plots inlined, so the page opens anywhere, offline."""
    from markdown_it import MarkdownIt

    def inline(match: re.Match) -> str:
        image = base / match.group(1)
        if not image.is_file():
            return match.group(0)
        return f'<img src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"'

    body = _IMAGE.sub(inline, MarkdownIt("commonmark").enable("table").render(markdown))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n")
