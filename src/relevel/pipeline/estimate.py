"""What a run will do before it runs (`relevel run --dry-run`): per step the items it handles, its judge,
generator and LLM calls, and a projected time. Record counts flow from the input files through each step's
`estimate`; a finished step gives its real counts instead. Time is items × the step's per-item cost measured
on the reference machine (2 CPU cores), so it is a rough guide elsewhere; the counts of steps that filter
(links kept, candidates kept) are upper bounds, and so is the time of a trainer that stops early (the judge,
the generator: every configured epoch is counted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relevel.pipeline.runner import PlannedStep, read_manifest
from relevel.pipeline.step import Step, Work

# For a step that asks an LLM: how many requests its work makes, and the tokens of one (prompt + answer)
LLMCalls = Callable[[Step, Work], tuple[int, int]]


@dataclass(frozen=True)
class StepEstimate:
    planned: PlannedStep
    work: Work | None  # None: the step cannot say (an input of unknown size)
    llm_requests: int
    llm_tokens: int
    seconds: float | None  # 0 for a cached step

    @property
    def records(self) -> int | None:
        return self.work.items if self.work is not None else None


def estimate_plan(plan: list[PlannedStep], run_dir: Path, llm_calls: LLMCalls) -> list[StepEstimate]:
    sizes: dict[str, int] = {}  # "step/output" → expected records
    estimates = []
    for planned in plan:
        step = planned.step
        work = step.estimate({slot: sizes[target] for slot, target in step.bind.items() if target in sizes})
        seconds: float | None
        if planned.status == "cached":  # its real counts; nothing left to ask or to wait for
            manifest = read_manifest(run_dir / step.name) or {}
            produced = {name: n for name, n in manifest.get("counts", {}).items() if name in step.outputs}
            requests, tokens, seconds = 0, 0, 0.0
        else:
            produced = work.outputs if work is not None else {}
            requests, tokens = llm_calls(step, work) if work is not None else (0, 0)
            # an LLM step's time is its server's
            seconds = None if work is None or requests else \
                work.seconds if work.seconds is not None else work.items * step.SECONDS_PER_ITEM
        sizes.update({f"{step.name}/{name}": n for name, n in produced.items()})
        estimates.append(StepEstimate(planned, work, requests, requests * tokens, seconds))
    return estimates
