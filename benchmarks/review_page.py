"""Responsiveness of the review page with 2,000 pairs in headless Chromium, and its file size.

    .venv/bin/python benchmarks/review_page.py [--rows 2000] [--loads 5]

Rows are the demo's unlabelled documents (title + video text, ~75 characters) with its training queries,
cycled to the row count. Measured: time from navigation to the first pair on screen, and the page's own work
per key press (the keydown handler, its local-storage write and the layout it causes), for a pick on every
pair in turn, so the last picks save the largest state; plus arrow moves and undos at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from playwright.sync_api import sync_playwright

from relevel.config import load_config, resolve_path
from relevel.pipeline.review import review_page

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# runs `keys` through the page's keydown handler one at a time; each timing includes the layout it causes
TIME_KEYS = """keys => keys.map(key => {
  const start = performance.now();
  document.dispatchEvent(new KeyboardEvent("keydown", {key: key, bubbles: true}));
  document.body.offsetHeight;
  return performance.now() - start;
})"""


def demo_rows(count: int) -> list[dict]:
    documents = [json.loads(line) for line in resolve_path("builtin:demo/unlabeled.jsonl", None).open()]
    queries = [json.loads(line)["query"] for line in resolve_path("builtin:demo/train.jsonl", None).open()]
    return [{"id": f"r1-d-{i:016x}-0-0", "query": queries[i % len(queries)],
             "doc": f"Title:{documents[i % len(documents)]['title']};Video_text:"
                    f"{documents[i % len(documents)]['video_text']}"} for i in range(count)]


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    return (f"median {statistics.median(ordered):.2f} ms, p95 {ordered[int(0.95 * (len(ordered) - 1))]:.2f} ms, "
            f"max {ordered[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    config = load_config("builtin:demo/demo.yaml")
    sizes = {n: len(review_page(config, "benchmark", demo_rows(n)).encode("utf-8")) for n in (800, args.rows)}
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        page_path = Path(folder) / "review.html"
        page_path.write_text(review_page(config, "benchmark", demo_rows(args.rows)), encoding="utf-8")
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        version = browser.version
        loads = []
        for _ in range(args.loads):
            context = browser.new_context()  # empty local storage each time
            page = context.new_page()
            start = time.perf_counter()
            page.goto(page_path.as_uri())
            page.wait_for_function("document.getElementById('query').textContent.length > 0")
            loads.append(1000 * (time.perf_counter() - start))
            context.close()
        page = browser.new_context().new_page()
        page.goto(page_path.as_uri())
        levels = len(config.scale.levels)
        picks = page.evaluate(TIME_KEYS, [str(i % levels) for i in range(args.rows)])
        done = page.text_content("#done")
        moves = page.evaluate(TIME_KEYS, ["ArrowLeft"] * 200)
        undos = page.evaluate(TIME_KEYS, ["u"] * 200)
        stored = page.evaluate("localStorage.getItem('relevel-review:benchmark').length")
        start = time.perf_counter()
        for i in range(100):
            page.keyboard.press(str(i % levels))
        round_trip = 10 * (time.perf_counter() - start)
        browser.close()
    print(f"{date.today()} · {platform.processor() or platform.machine()} · Chromium {version}")
    print(f"HTML size: 800 rows {sizes[800] / 1e6:.2f} MB, {args.rows} rows {sizes[args.rows] / 1e6:.2f} MB")
    print(f"navigation → first pair on screen ({args.loads} loads): median {statistics.median(loads):.0f} ms, "
          f"max {max(loads):.0f} ms")
    print(f"pick (keydown handler + local storage + layout), {args.rows} picks: {summary(picks)}; "
          f"last 100: {summary(picks[-100:])}; state saved {stored / 1e3:.0f} kB; page says '{done}'")
    print(f"← move, 200: {summary(moves)}; undo, 200: {summary(undos)}")
    print(f"key press through Playwright (CDP round trip included), 100 presses: {round_trip:.1f} ms each")


if __name__ == "__main__":
    main()
