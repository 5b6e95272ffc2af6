"""The frozen encoder's on-disk store: a second step of the run reads what the first one encoded."""

import numpy as np

from relevel.models.encoder import ONNX_FILE, FrozenEncoder, use_runtime


def test_store_round_trip_gives_identical_encodings_without_recomputing(offline_base, tmp_path):
    texts = ["红烧肉怎么做", "吉他入门教学", "iPhone 15 续航"]
    first = FrozenEncoder(offline_base, 32, "query: ", "passage: ", store=tmp_path)
    first.encode(texts, "document")
    first.encode(texts[:1], "query")
    first.encode(texts, "document")  # nothing new: no new shard
    shards = list(tmp_path.rglob("shard-*.npz"))
    assert len(shards) == 2

    second = FrozenEncoder(offline_base, 32, "query: ", "passage: ", store=tmp_path)
    assert len(second.cache) == 4
    second.model = None  # any attempt to encode again would fail
    second.encode(texts, "document")
    for text in texts:
        (m1, t1), (m2, t2) = first.get("document", text), second.get("document", text)
        assert np.array_equal(m1, m2) and np.array_equal(t1, t2) and m1.dtype == m2.dtype == np.float32

    other = FrozenEncoder(offline_base, 16, "query: ", "passage: ", store=tmp_path)  # another setting
    assert other.cache == {}


def test_onnxruntime_gives_the_torch_states_and_exports_once_per_store(offline_base, tmp_path):
    texts = ["红烧肉怎么做", "吉他入门教学视频合集", "iPhone 15 续航", "猫"]  # different lengths: padding
    reference = FrozenEncoder(offline_base, 32, num_layers=4)
    reference.encode(texts, "document", batch_size=3)
    try:
        use_runtime("onnxruntime")
        onnx = FrozenEncoder(offline_base, 32, num_layers=4, store=tmp_path)
        onnx.encode(texts, "document", batch_size=3)
        exported = list(tmp_path.rglob(ONNX_FILE))
        assert len(exported) == 1
        again = FrozenEncoder(offline_base, 32, num_layers=4, store=tmp_path)  # same store: reuses the graph
        again.encode(["新的文本"], "document")
        assert list(tmp_path.rglob(ONNX_FILE)) == exported
    finally:
        use_runtime("torch")
    for text in texts:
        (m1, t1), (m2, t2) = reference.get("document", text), onnx.get("document", text)
        assert t1.shape == t2.shape
        # the same states up to float16 rounding (measured: 1.2e-4 and 2.4e-4 at most)
        np.testing.assert_allclose(m1, m2, atol=1e-3)
        np.testing.assert_allclose(t1.astype(np.float32), t2.astype(np.float32), atol=1e-3)
