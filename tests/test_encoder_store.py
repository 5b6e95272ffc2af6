"""The frozen encoder's on-disk store: a second step of the run reads what the first one encoded."""

import numpy as np

from relevel.models.encoder import FrozenEncoder


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
