"""Train the level-controlled query generator, and measure how well it hits its target levels."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair, normalize_text
from relevel.data.splits import cap_levels, split_by_document
from relevel.eval.generation import control_accuracy, diversity
from relevel.models.generator import create_generator, load_generator
from relevel.models.generator.config import CPU_SECONDS_PER_EXAMPLE, GeneratorConfig
from relevel.models.judge import Judge, load_judge
from relevel.models.judge.config import CPU_SECONDS_PER_JUDGED_PAIR
from relevel.pipeline.filter import kept_pairs
from relevel.pipeline.io import ChunkedOutputs, read_records
from relevel.pipeline.step import RUNTIME, Step, StepContext, StepResult, Work, encoder_store
from relevel.pipeline.synthesize import RunsGenerator


@dataclass(kw_only=True)
class TrainGenerator(Step):
    """(document, level) → query on the D2Q pairs; early stopping on a document-disjoint tune slice."""

    VERSION: ClassVar[int] = 2  # the pointer-generator decoder: a saved copy-bias decoder must not load as one
    inputs: ClassVar[tuple[str, ...]] = ("pairs",)
    outputs: ClassVar[tuple[str, ...]] = ("model",)

    scale: LevelScale
    config: GeneratorConfig

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if self.config.backend == "llm-prompt":
            return Work(0)  # it only picks its few-shot examples
        if "pairs" not in sizes:
            return None
        examples = sizes["pairs"] + sizes.get("synthetic", 0)
        if self.config.max_examples is not None:
            examples = min(examples, self.config.max_examples)
        passes = round(examples * self.config.epochs)  # early stopping may use fewer epochs
        return Work(passes, seconds=passes * CPU_SECONDS_PER_EXAMPLE[self.config.backend])

    def run(self, ctx: StepContext) -> StepResult:
        pairs = self.training_pairs(ctx)
        fit, tune = split_by_document(pairs, self.config.tune_fraction, self.config.seed)
        generator = create_generator(self.scale, self.config, encoder_store(ctx))
        report = generator.fit(fit, tune, progress=ctx.progress, work_dir=ctx.step_dir,
                               init_from=ctx.inputs.get("init"))
        generator.save(ctx.step_dir / "model")
        return StepResult(counts={"fit_examples": report["train_examples"], "tune_examples": len(tune),
                                  "synthetic_pairs": sum(p.source.startswith("synthetic") for p in pairs)},
                          metrics={"fit": report})

    def training_pairs(self, ctx: StepContext) -> list[LabeledPair]:
        return self.capped([LabeledPair(**r) for r in read_records(ctx.inputs["pairs"])])

    def capped(self, pairs: list[LabeledPair]) -> list[LabeledPair]:
        ratio = self.config.level_cap_ratio
        return cap_levels(pairs, ratio, self.config.seed) if ratio and pairs else pairs


@dataclass(kw_only=True)
class RetrainGenerator(TrainGenerator):
    """Stage 2's retrain: warm-started from `init`, on every kept synthetic query so far plus `replay` ×
    as many D2Q examples, so a round learns mostly from what the judge just confirmed without forgetting
    the levels synthesis did not ask for."""

    inputs: ClassVar[tuple[str, ...]] = ("pairs", "synthetic", "init")

    replay: float

    def run(self, ctx: StepContext) -> StepResult:
        if not any(True for _ in read_records(ctx.inputs["synthetic"])):  # nothing kept yet: nothing to learn
            shutil.copytree(ctx.inputs["init"], ctx.step_dir / "model", dirs_exist_ok=True)
            return StepResult(counts={"fit_examples": 0, "synthetic_pairs": 0}, metrics={"fit": {"skipped": True}})
        return super().run(ctx)

    def training_pairs(self, ctx: StepContext) -> list[LabeledPair]:
        stage1 = super().training_pairs(ctx)
        synthetic = kept_pairs(ctx.inputs["synthetic"])
        wanted = round(self.replay * len(synthetic))
        if wanted < len(stage1):
            rng = np.random.default_rng(self.config.seed)
            stage1 = [stage1[i] for i in sorted(rng.choice(len(stage1), wanted, replace=False))]
        # capped together: synthesis skews toward the rare levels on purpose, capping it alone would undo that
        return self.capped(stage1 + synthetic)


BASELINES = ("copy document", "cut document", "random training query")


def baseline_control(judge: Judge, docs: list[str], train_queries: list[str], scale: LevelScale, seed: int,
                     batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Control accuracy of each trivial baseline: a baseline ignores the target level, so its one query per
    document stands for every level."""
    cut = int(np.median([len(q) for q in train_queries]))
    random_queries = list(np.random.default_rng(seed).choice(train_queries, len(docs)))
    queries = dict(zip(BASELINES, ([doc for doc in docs], [doc[:cut] for doc in docs], random_queries)))
    levels = range(scale.num_levels)
    return {name: control_accuracy([lvl for lvl in levels for _ in docs],
                                   [j for _ in levels for j in judge.predict(qs, docs, batch_size).levels], scale)
            for name, qs in queries.items()}


@dataclass(kw_only=True)
class ControlAccuracy(RunsGenerator, Step):
    """Generates queries for held-out documents at every level; a judge that filtered nothing scores them,
    beside the trivial baselines and, as a reference, the evaluation split's real queries at their human
    level (what that judge grants real data). Records every generated query with its judged level."""

    VERSION: ClassVar[int] = 2  # + the real-query reference

    inputs: ClassVar[tuple[str, ...]] = ("generator", "judge", "documents", "train")
    outputs: ClassVar[tuple[str, ...]] = ("generated",)
    # per generated query, judged by the held-out judge (seq2seq generator, embedding-features judge)
    SECONDS_PER_ITEM: ClassVar[float] = 0.037

    scale: LevelScale
    documents: int = 300
    queries_per_level: int = 2
    seed: int = 0
    batch_size: int = field(default=64, metadata=RUNTIME)
    # only for the dry run's projection, as the generator's backend (JudgeConfig.cpu_seconds_per_pair)
    judge_seconds_per_pair: float = field(default=CPU_SECONDS_PER_JUDGED_PAIR["embedding-features"],
                                          metadata=RUNTIME)

    def estimate(self, sizes: dict[str, int]) -> Work | None:
        if "documents" not in sizes:
            return None
        documents = min(self.documents, sizes["documents"])
        generated = documents * self.scale.num_levels * self.queries_per_level
        # judged: the generated queries, the trivial baselines' and the real queries at their human level
        judged = generated + len(BASELINES) * documents + sizes["documents"]
        slower_judge = judged * (self.judge_seconds_per_pair - CPU_SECONDS_PER_JUDGED_PAIR["embedding-features"])
        return Work(generated, {"generated": generated}, judge_calls=judged, generated=generated,
                    seconds=generated * self.seconds_per_query(self.SECONDS_PER_ITEM) + slower_judge)

    def run(self, ctx: StepContext) -> StepResult:
        docs = self._documents(ctx)
        train_queries = [r["query"] for r in read_records(ctx.inputs["train"])]
        levels = list(range(self.scale.num_levels))
        rows = [(doc_id, doc, level) for doc_id, doc in docs for level in levels]
        generator = load_generator(ctx.inputs["generator"], encoder_store(ctx))
        generated = generator.generate([doc for _, doc, _ in rows], [lvl for *_, lvl in rows],
                                       self.queries_per_level, seed=self.seed, progress=ctx.progress)
        records = [{"doc_id": doc_id, "doc": doc, "target": level, "query": query}
                   for (doc_id, doc, level), queries in zip(rows, generated) for query in queries]
        del generator

        judge = load_judge(ctx.inputs["judge"], encoder_store(ctx))
        judged = judge.predict([r["query"] for r in records], [r["doc"] for r in records], self.batch_size,
                               progress=ctx.progress)
        for record, level, probs in zip(records, judged.levels, judged.probs):
            record.update(judged=int(level), probs=[round(float(p), 5) for p in probs])

        known = {normalize_text(q) for q in train_queries}
        targets = [r["target"] for r in records]
        metrics = {"documents": len(docs), "generator": {
            "control": control_accuracy(targets, [r["judged"] for r in records], self.scale),
            "diversity": diversity([r["query"] for r in records], [r["doc"] for r in records], known)}}
        metrics["baselines"] = {name: {"control": hits} for name, hits in baseline_control(
            judge, [doc for _, doc in docs], train_queries, self.scale, self.seed, self.batch_size).items()}
        real = list(read_records(ctx.inputs["documents"]))
        metrics["real_queries"] = {"control": control_accuracy(
            [r["level"] for r in real],
            judge.predict([r["query"] for r in real], [r["doc"] for r in real], self.batch_size).levels,
            self.scale)}
        metrics["controlled"] = {name: hit is not None and all(
            hit > b["control"][name] for b in metrics["baselines"].values())
            for name, hit in metrics["generator"]["control"].items()}
        ChunkedOutputs(ctx.step_dir, self.outputs).write_all({"generated": records}, ctx.chunk_size)
        return StepResult(counts={"generated": len(records)}, metrics=metrics)

    def _documents(self, ctx: StepContext) -> list[tuple[str, str]]:
        unique = {r["doc_id"]: r["doc"] for r in read_records(ctx.inputs["documents"])}
        ids = sorted(unique)
        if len(ids) > self.documents:
            ids = sorted(np.random.default_rng(self.seed).choice(ids, self.documents, replace=False).tolist())
        return [(doc_id, unique[doc_id]) for doc_id in ids]
