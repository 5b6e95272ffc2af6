"""One YAML config per run, validated by pydantic. Unknown keys and wrong types are errors naming file and key.

Relative paths resolve against the config file's folder first, then the current directory;
`builtin:NAME` names a file shipped inside the package (the embedded demo data).
"""

from __future__ import annotations

import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from relevel.data.scale import LevelScale
from relevel.data.validation import DatasetSpec, OnError
from relevel.errors import ConfigError
from relevel.models.embedder.config import EmbedderConfig
from relevel.models.generator.config import GeneratorConfig
from relevel.models.judge.config import JudgeConfig
from relevel.models.llm.config import LLMConfig

BUILTIN_PREFIX = "builtin:"
LLM_BACKENDS = ("llm", "llm-prompt", "reasoning-lm")  # backends that use an endpoint (reasoning-lm: its teacher)


def resolve_path(value: str | Path, base_dir: Path | None) -> Path:
    """`builtin:x` -> file in the package; relative -> config folder, else current directory."""
    text = str(value)
    if text.startswith(BUILTIN_PREFIX):
        return Path(str(resources.files("relevel").joinpath(text.removeprefix(BUILTIN_PREFIX))))
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    if base_dir is not None and (base_dir / path).exists():
        return (base_dir / path).resolve()
    return path.resolve()


DOCUMENT_SPLITS = ("unlabeled", "distractors")  # documents without queries; the other splits hold pairs


class DataConfig(DatasetSpec):
    """Where the splits are and how to read them."""

    train: Path = Field(description="Labelled pairs used for training (stages 1-2 and every trainer).")
    dev: Path | None = Field(None, description="Labelled evaluation split; never trains anything.")
    unlabeled: Path | None = Field(None, description="Documents without queries, for synthesis.")
    distractors: Path | None = Field(None, description="Documents added to the retrieval corpus of every "
                                     "embedder evaluation, relevant to no evaluation query (the split's own "
                                     "documents alone make an easy corpus); never trains anything. Keep them out "
                                     "of `unlabeled` for a fair comparison: stage 2 writes queries for those.")
    on_error: OnError = Field("fail", description="Bad record: 'fail' stops with file:line:field, "
                              "'reject' writes it to rejects.jsonl and goes on.")

    @field_validator("train", "dev", "unlabeled", "distractors", mode="before")
    @classmethod
    def _resolve(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        base_dir = (info.context or {}).get("base_dir")
        return resolve_path(value, base_dir)

    def spec(self) -> DatasetSpec:
        """How to read a file, without where the files are (paths are hashed by content instead)."""
        return DatasetSpec(**self.model_dump(include=set(DatasetSpec.model_fields)))

    def splits(self) -> dict[str, Path]:
        named = {"train": self.train, "dev": self.dev, "unlabeled": self.unlabeled, "distractors": self.distractors}
        return {name: path for name, path in named.items() if path is not None}


class LinkingConfig(BaseModel):
    """Which real queries each document is linked to before the judge labels the links."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    documents: tuple[Literal["train", "unlabeled"], ...] = Field(
        ("train", "unlabeled"), description="Whose documents get links: the labelled ones, the pool, or both.")
    top: int = Field(4, ge=0, description="BM25's best-ranked queries per document (likely relevant).")
    middle: int = Field(3, ge=0, description="Queries drawn from BM25 ranks top..middle_depth (partly "
                        "relevant: where the intermediate levels are).")
    middle_depth: int = Field(50, gt=0, description="Deepest BM25 rank the middle draw reaches.")
    random: int = Field(1, ge=0, description="Random queries from the pool (mostly irrelevant).")
    max_links_per_query: int = Field(20, gt=0, description="Cap on documents one query is linked to, so a "
                                     "popular query does not dominate the generator's data.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> LinkingConfig:
        if self.top + self.middle + self.random == 0:
            raise ValueError("top + middle + random must be at least 1")
        if self.middle and self.middle_depth <= self.top:
            raise ValueError(f"middle_depth ({self.middle_depth}) must be deeper than top ({self.top})")
        return self


class RewriteConfig(BaseModel):
    """The LLM content-rewrite step before ingest: a document's rich fields → one concise text field that
    `data.document.template` renders (e.g. `Title:{title};Video_text:{video_text}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: tuple[str, ...] = Field(min_length=1, description="Rich fields the LLM reads, e.g. [title, ocr, asr, "
                                    "tags]; missing or empty ones are left out of the prompt.")
    output: str = Field("video_text", description="Field the rewritten text goes to; name it in the template.")
    max_chars: int = Field(300, gt=0, description="Longest rewritten text (longer answers are cut).")
    overwrite: bool = Field(False, description="Also rewrite rows whose output field is already filled "
                            "(false: keep those as they are, without asking the LLM).")
    llm: LLMConfig | None = Field(None, description="Its endpoint (default: the config's `llm:`).")


class AnnotationConfig(BaseModel):
    """Which judged links join the human pairs in the D2Q data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_confidence: float = Field(0.6, ge=0, le=1, description="Keep a link only if the judge's calibrated "
                                  "probability of its predicted level is at least this.")


class ControlConfig(BaseModel):
    """How control accuracy is measured: queries generated for held-out (evaluation) documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    documents: int = Field(300, gt=0, description="Evaluation documents sampled for the measurement.")
    queries_per_level: int = Field(2, gt=0, description="Queries generated per document and level.")
    seed: int = 0


class SynthesisConfig(BaseModel):
    """Stage 2: rounds of generating queries for unseen documents at chosen levels, keeping what the judge
    confirms, and retraining the generator on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(2, ge=0, description="Synthesis rounds (0: no stage 2).")
    target_distribution: Literal["balance"] | dict[str, float] = Field(
        "balance", description="'balance': fill each level up to the most common real level's count; or "
        "explicit final shares per level name, e.g. {poor: 0.2, partial: 0.4, high: 0.4}.")
    only: list[str] | None = Field(None, description="Request only these levels (names), in equal parts.")
    documents_per_round: int | None = Field(None, gt=0, description="Unseen documents each round writes for "
                                            "(a different seeded slice per round; null: all of them). Sizes a "
                                            "round to the time budget.")
    requests_per_document: int = Field(1, gt=0, description="(document, level) requests per document and round.")
    candidates: int = Field(3, gt=0, description="Queries sampled per request before filtering.")
    min_probability: float = Field(0.5, ge=0, le=1, description="Keep a candidate only if the (calibrated) "
                                   "judge gives its target level at least this probability.")
    order_check: bool = Field(True, description="Drop queries whose judged expected level contradicts the "
                              "order of levels among one document's kept queries.")
    llm_order_check: bool = Field(False, description="Also ask the `llm:` endpoint, for neighbouring levels "
                                  "of one document's kept queries, which query the document serves better; "
                                  "pairs it orders against their levels lose the less confident query.")
    retrain_epochs: float = Field(1.0, gt=0, description="Epochs of each round's warm-started retrain.")
    retrain_examples: int | None = Field(4000, gt=0, description="Examples per retrain (kept synthetic and "
                                         "replayed stage-1 ones, level-capped), sized to the round's time budget.")
    replay: float = Field(1.0, ge=0, description="Stage-1 (D2Q) examples replayed per kept synthetic one in a "
                          "retrain: the round learns mostly from what the judge just confirmed, without "
                          "forgetting the levels synthesis did not ask for.")
    seed: int = 0


class ExperimentConfig(BaseModel):
    """The embedder experiment: the same embedder, budget and evaluation for each training set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variants: tuple[Literal["real", "stage1", "ssra", "ssra-binary", "vanilla", "prompt-only"], ...] = Field(
        ("real", "stage1", "ssra", "ssra-binary", "vanilla"), description="Training sets: 'real' pairs only; "
        "real + the stage-1 generator's judge-kept queries ('stage1'); real + every round's ('ssra'); "
        "'ssra-binary': without intermediate levels; 'vanilla': real + the judge-kept queries of the same "
        "generator trained on the original pairs only; 'prompt-only': real + the judge-kept queries of a "
        "prompted LLM (needs `llm:`). Baselines synthesise as many requests, for the same documents, as all "
        "SSRA rounds together.")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="Embedder seeds per variant.")
    baselines: bool = Field(True, description="Also evaluate the zero-shot base and BM25.")
    bootstrap: int = Field(1000, ge=0, description="Paired per-query bootstrap resamples (SSRA − real).")
    seed: int = 0


class RayConfig(BaseModel):
    """A Ray cluster: the one `address` (or the RAY_ADDRESS variable) names, else a local instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(None, description="Cluster address ('auto', 'ray://host:10001'); null: "
                                "RAY_ADDRESS if set, else a local Ray instance started for the run.")
    actors: int = Field(2, gt=0, description="Actors per step, each holding one copy of the step's model.")
    num_cpus_per_actor: float = Field(1, gt=0, description="CPUs reserved per actor (also its torch threads).")
    num_gpus_per_actor: float = Field(0, ge=0, description="GPUs per actor (fractions share a GPU).")
    local_cpus: int | None = Field(None, gt=0, description="CPUs of a local instance; null: all of them.")


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "ray"] = Field("local", description="'ray': record steps (ingest, judge, generate) "
                                          "run as Ray Data pipelines over actor pools.")
    ray: RayConfig = Field(default_factory=RayConfig)


class RuntimeConfig(BaseModel):
    """How to run, not what to compute: never part of a cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_size: int = Field(1000, gt=0, description="Records per committed output chunk (resume granularity).")
    progress: bool = Field(True, description="Show progress bars.")
    threads: int | None = Field(None, gt=0, description="CPU threads for model work; null lets torch decide.")
    inference_batch_size: int = Field(64, gt=0, description="Pairs per model call when judging.")
    encoder: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="Where the frozen encoder (the judge's, the generator's, the embedder's "
        "lower layers) runs: exported once to ONNX and run by ONNX Runtime (the same states, about 1.5× "
        "faster on CPU), or in torch.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Where record steps run: this "
                                 "process or a Ray cluster; results are the same either way.")
    on_version_mismatch: Literal["rerun", "stop"] = Field(
        "rerun", description="A step folder in the run directory made by another version of the step's code: "
        "'rerun' redoes it (and everything after it), 'stop' stops with an error naming it.")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Run name, shown in reports.")
    scale: LevelScale
    data: DataConfig
    rewrite: RewriteConfig | None = Field(None, description="LLM content rewrite of every split before ingest "
                                          "(null: documents are rendered from their fields as they are).")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    linking: LinkingConfig = Field(default_factory=LinkingConfig)
    annotation: AnnotationConfig = Field(default_factory=AnnotationConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    experiment: ExperimentConfig | None = Field(None, description="Embedder experiment (null: no embedder "
                                                "steps in the run).")
    llm: LLMConfig | None = Field(None, description="Default OpenAI-compatible endpoint for every part set to "
                                  "an LLM backend (judge, generator, order check) that names none of its own.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="before")
    @classmethod
    def _share_llm(cls, raw: Any) -> Any:
        """Sections with an LLM backend and no endpoint of their own use the top-level `llm`."""
        if not isinstance(raw, dict) or raw.get("llm") is None:
            return raw
        out = dict(raw)
        for section in ("judge", "generator"):
            part = out.get(section)
            if isinstance(part, dict) and part.get("backend") in LLM_BACKENDS and part.get("llm") is None:
                out[section] = {**part, "llm": raw["llm"]}
        if isinstance(out.get("rewrite"), dict) and out["rewrite"].get("llm") is None:
            out["rewrite"] = {**out["rewrite"], "llm": raw["llm"]}
        return out

    @model_validator(mode="after")
    def _synthesis_levels(self) -> RunConfig:
        names = [level.name for level in self.scale.levels]
        targets = self.synthesis.target_distribution
        named = [*(self.synthesis.only or []), *(targets if isinstance(targets, dict) else [])]
        unknown = [name for name in named if name not in names]
        if unknown:
            raise ValueError(f"synthesis: unknown level name(s) {unknown}; the scale's levels are {names}")
        if isinstance(targets, dict) and (any(v < 0 for v in targets.values()) or not sum(targets.values())):
            raise ValueError("synthesis.target_distribution: shares must be ≥ 0 and not all 0")
        if self.synthesis.only == []:
            raise ValueError("synthesis.only: name at least one level (or leave it out)")
        if self.rewrite is not None and self.rewrite.llm is None:
            raise ValueError("rewrite needs an LLM endpoint: set `llm:` (or `rewrite.llm:`)")
        if self.synthesis.llm_order_check and self.llm is None:
            raise ValueError("synthesis.llm_order_check needs an LLM endpoint: set `llm:`")
        if self.experiment is not None and "prompt-only" in self.experiment.variants and self.llm is None:
            raise ValueError("experiment.variants 'prompt-only' needs an LLM endpoint: set `llm:`")
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML where a key given twice in one mapping is an error (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_raw_config(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The config's keys; `extends: FILE` (a config in the same folder) supplies defaults for them."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    if "extends" in raw:
        parent = resolve_path(str(raw.pop("extends")), path.parent)
        if not parent.is_file():
            raise ConfigError(f"{path}: key 'extends': no config file at {parent}")
        if parent in seen:
            raise ConfigError(f"{path}: key 'extends': {parent} extends itself in a loop")
        raw = merged(read_raw_config(parent, (*seen, path)), raw)
    return raw


def load_config(path: str | Path) -> RunConfig:
    path = resolve_path(path, None)
    raw = read_raw_config(path)
    try:
        return RunConfig.model_validate(raw, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None


def merged(base: dict, override: dict) -> dict:
    """`override` on top of `base`, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the config"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(error["loc"][-1]), _known_keys(error["loc"]), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"  key '{key}': unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"  key '{key}': required, missing")
        else:
            lines.append(f"  key '{key}': {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the config section that holds `loc`, for a did-you-mean hint."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        sections = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)
