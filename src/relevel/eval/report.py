"""Tables that render both in the terminal (rich) and in the Markdown report, from one definition."""

from __future__ import annotations

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
        ("pairs per query (mean / max)", lambda s: f"{s['pairs_per_query']['mean']:.2f} / {s['pairs_per_query']['max']}"),
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


def _percentiles(p: dict[str, int]) -> str:
    return " / ".join(str(p[k]) for k in ("p50", "p90", "p99", "p100"))


def render_section(heading: str, blocks: list[Table | str]) -> str:
    """One `## heading` section of a report, as `write_report` writes it."""
    parts = [f"## {heading}\n"]
    parts += [block.to_markdown() if isinstance(block, Table) else block + "\n" for block in blocks]
    return "\n".join(parts)


def write_report(path: Path, title: str, sections: list[tuple[str, list[Table | str]]]) -> Path:
    parts = [f"# {title}\n"] + [render_section(heading, blocks) for heading, blocks in sections]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
