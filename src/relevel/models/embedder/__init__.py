"""The bi-encoder that real + synthetic pairs train: a sentence-transformers model (mean pooling, unit
vectors) with `query` / `document` prompts stored in its config, trained by `SentenceTransformerTrainer`."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relevel.data.scale import LevelScale
from relevel.data.schema import LabeledPair
from relevel.errors import RelevelError
from relevel.models.embedder.config import EmbedderConfig
from relevel.models.registry import check_weights


def build_embedder(config: EmbedderConfig):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from relevel.models.base_model import resolve_model

    path = resolve_model(config.base_model)
    if Path(path).is_dir():
        check_weights(path)
    transformer = Transformer(path, max_seq_length=config.max_seq_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu",
                               prompts={"query": config.query_prompt, "document": config.document_prompt})


def load_embedder(path: Path | str):
    from sentence_transformers import SentenceTransformer

    check_weights(path)
    return SentenceTransformer(str(path), device="cpu")


def with_stored_lower_layers(model, config: EmbedderConfig, datasets: dict, prompts: dict[str, str],
                             store: Path | None, progress: bool):
    """The model to train when only the top `trainable_layers` learn: the frozen layers' states of every
    training text are computed once (kept in `store`) and the top layers run on them at each step."""
    from relevel.models.embedder.stored_layers import stored_layers_model
    from relevel.models.encoder import FrozenEncoder

    depth = model[0].auto_model.config.num_hidden_layers
    if config.trainable_layers >= depth:
        return model
    # no prefixes of its own: texts are keyed with their prompt, as the trainer hands them over
    lower = FrozenEncoder(config.base_model, config.max_seq_length, num_layers=depth - config.trainable_layers,
                          store=store, special_tokens=True)
    texts = {prompts[column] + text for dataset in datasets.values() for column in dataset.column_names
             if column in prompts for text in dataset[column]}
    lower.encode(sorted(texts), "document", progress)
    return stored_layers_model(model, lower, config.trainable_layers)


def _stand_in_trainer():
    from sentence_transformers import SentenceTransformerTrainer

    class StandInTrainer(SentenceTransformerTrainer):
        """Trains the stored-layers stand-in: no model card (its token statistics would look up texts the
        store lacks, and the stand-in is never saved)."""

        def add_model_card_callback(self, default_args_dict: dict) -> None:
            pass

    return StandInTrainer


def infonce_rows(pairs: Sequence[LabeledPair], scale: LevelScale, graded: bool) -> dict[str, list]:
    """(query, positive, weight) for every pair at level ≥ 1; graded: weight = level / top level."""
    rows = [p for p in pairs if p.level >= 1]
    return {"query": [p.query for p in rows], "document": [p.doc for p in rows],
            "label": [p.level / scale.max_level if graded else 1.0 for p in rows]}


MINING_BATCH = 512  # rows scored against the whole corpus at once


def with_hard_negatives(rows: dict[str, list], pairs: Sequence[LabeledPair], config: EmbedderConfig,
                        corpus: list[str], store: Path | None) -> tuple[dict[str, list], int]:
    """Adds `hard_negatives` negative columns: first the query's own level-0 documents (labelled negatives),
    then the corpus documents the base model scores highest for the query without a label for it, among
    those at or below (1 − margin) × the positive's score (above it: likely unlabelled positives). Returns
    the rows that got their negatives and how many had too few.

    Why not `sentence_transformers.util.mine_hard_negatives`: it encodes the corpus again (5.5 minutes for
    QBQTC's 22k titles on 2 cores); the run's encoder store already holds the base model's vectors for every
    judged text, with the same prompts and length."""
    from relevel.models.encoder import FrozenEncoder

    encoder = FrozenEncoder(config.base_model, config.max_seq_length, config.query_prompt, config.document_prompt,
                            store=store)
    queries = sorted(set(rows["query"]))
    encoder.encode(queries, "query")
    encoder.encode(corpus, "document")
    query_vectors = np.stack([encoder.get("query", q)[0][-1] for q in queries])
    doc_vectors = np.stack([encoder.get("document", d)[0][-1] for d in corpus])
    doc_index = {d: i for i, d in enumerate(corpus)}
    query_index = {q: i for i, q in enumerate(queries)}

    labelled: dict[str, set[str]] = defaultdict(set)
    level0: dict[str, list[str]] = defaultdict(list)
    for p in pairs:
        labelled[p.query].add(p.doc)
        if p.level == 0:
            level0[p.query].append(p.doc)
    out = {"query": [], "document": [], **{f"negative_{i + 1}": [] for i in range(config.hard_negatives)},
           "label": []}
    too_few = 0
    for start in range(0, len(rows["query"]), MINING_BATCH):
        batch = range(start, min(start + MINING_BATCH, len(rows["query"])))
        vectors = query_vectors[[query_index[rows["query"][i]] for i in batch]]
        scores = vectors @ doc_vectors.T
        for row, i in enumerate(batch):
            query, doc = rows["query"][i], rows["document"][i]
            ceiling = (1 - config.hard_negative_margin) * scores[row, doc_index[doc]]
            candidate = np.where(scores[row] <= ceiling, scores[row], -np.inf)
            candidate[[doc_index[d] for d in labelled[query] if d in doc_index]] = -np.inf
            best = np.argsort(-candidate)[:config.hard_negatives]
            negatives = [*level0[query], *(corpus[j] for j in best if np.isfinite(candidate[j]))]
            if len(negatives) < config.hard_negatives:
                too_few += 1
                continue
            out["query"].append(query)
            out["document"].append(doc)
            for k in range(config.hard_negatives):
                out[f"negative_{k + 1}"].append(negatives[k])
            out["label"].append(rows["label"][i])
    return out, too_few


def train_embedder(config: EmbedderConfig, scale: LevelScale, pairs: Sequence[LabeledPair], corpus: list[str],
                   out_dir: Path, work_dir: Path, encoder_store: Path | None = None, progress: bool = False) -> dict:
    """Fine-tunes the base on `pairs` (real and/or synthetic) with the configured loss and saves the model
    to `out_dir`; `corpus` is where hard negatives are mined from (`encoder_store`: the run's stored base-model
    vectors)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MatryoshkaLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers, MultiDatasetBatchSamplers
    from transformers import PrinterCallback, set_seed

    from relevel.models.embedder.losses import GradedInfoNCELoss
    from relevel.models.hf import ProgressBar

    set_seed(config.seed)
    model = build_embedder(config)
    too_large = [d for d in config.matryoshka_dims or () if d > model.get_embedding_dimension()]
    if too_large:
        raise RelevelError(f"embedder.matryoshka_dims {too_large}: larger than the model's "
                           f"{model.get_embedding_dimension()} dimensions")
    datasets, too_few = {}, 0
    if "infonce" in config.loss:
        rows = infonce_rows(pairs, scale, graded=config.loss.startswith("graded"))
        if config.hard_negatives:
            rows, too_few = with_hard_negatives(rows, pairs, config, corpus, encoder_store)
        datasets["infonce"] = Dataset.from_dict(rows)
    if "cosent" in config.loss:
        # CoSENT orders every two pairs of a batch by level, and a judge's levels are not on the human
        # labellers' scale: each labeller gets batches of its own (one dataset each)
        for name, labelled in (("cosent", [p for p in pairs if p.source == "real"]),
                               ("cosent-judged", [p for p in pairs if p.source != "real"])):
            if labelled:
                datasets[name] = Dataset.from_dict({"query": [p.query for p in labelled],
                                                    "document": [p.doc for p in labelled],
                                                    "score": [p.level / scale.max_level for p in labelled]})
    prompts = {"query": config.query_prompt, "document": config.document_prompt,
               **{f"negative_{i + 1}": config.document_prompt for i in range(config.hard_negatives)}}
    trained = (with_stored_lower_layers(model, config, datasets, prompts, encoder_store, progress)
               if config.trainable_layers else model)
    losses = {}
    if "infonce" in datasets:
        losses["infonce"] = GradedInfoNCELoss(trained, config.infonce_scale)
    if "cosent" in config.loss:
        cosent = CoSENTLoss(trained)
        losses.update({name: cosent for name in datasets if name.startswith("cosent")})
    if config.matryoshka_dims:
        losses = {name: MatryoshkaLoss(trained, loss, list(config.matryoshka_dims)) for name, loss in losses.items()}
    counts = {name: len(ds) for name, ds in datasets.items()}
    # WiSE-FT needs the weights training will change as they start (the stored lower layers never change)
    start = {name: p.detach().clone() for name, p in trained.named_parameters()} if config.base_share else {}
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=config.epochs, max_steps=config.steps or -1,
            per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
            warmup_steps=config.warmup_ratio, seed=config.seed, data_seed=config.seed,  # a float: a ratio
            batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate text in a batch is a false negative
            # batches drawn in proportion to each dataset's size: every example is seen about equally often
            multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
            prompts=prompts,
            save_strategy="no", report_to="none", logging_steps=10, disable_tqdm=True, use_cpu=True,
            dataloader_drop_last=True)
        single = len(datasets) == 1
        trainer_class = SentenceTransformerTrainer if trained is model else _stand_in_trainer()
        trainer = trainer_class(
            model=trained, args=args, train_dataset=next(iter(datasets.values())) if single else datasets,
            loss=next(iter(losses.values())) if single else losses,
            callbacks=[ProgressBar("training embedder", "loss", progress)])
        trainer.remove_callback(PrinterCallback)
        result = trainer.train()
    with torch.no_grad():
        for name, weights in trained.named_parameters() if start else ():
            weights.lerp_(start[name], config.base_share)  # (1 − share) · trained + share · base
    model.save(str(out_dir))
    return {"examples": counts, "without_enough_negatives": too_few, "pairs": len(pairs), "steps": result.global_step,
            "train_seconds": result.metrics["train_runtime"], "train_loss": result.training_loss}
