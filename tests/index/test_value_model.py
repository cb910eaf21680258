"""One metadata value model: refused at the door (NaN, infinities, integers beyond 64 bits), and every
backend (docs.sqlite, the change log, the Python reference, Milvus) matching filters identically on what
is let in — big integers near and past 2^53 included, where a float comparison would blur neighbours."""

import asyncio
import json
import math
import random

import numpy as np
import pytest

from whitevec.index import filters
from whitevec.index.changes import CHANGES_FILE, ChangeLog
from whitevec.index.documents import MAX_METADATA_INT, parse_document, read_jsonl
from whitevec.index.faiss_index import VectorIndex
from whitevec.index.spec import IndexSpec, SearchParams
from whitevec.index.retriever import FaissRetriever
from whitevec.index.store import Document, DocumentStore
from whitevec.models.errors import WhitevecError
from whitevec.models.pipeline import l2_normalize

from .test_filters import reference

BIG = 2**53
#: Values where exactness matters: neighbours of 2^53 that a float cannot tell apart, the 64-bit edges,
#: integer-valued floats (2.0 equals 2), and the usual JSON types.
VALUES = [0, 1, 1.0, 2.0, 2, 2.5, BIG, BIG + 1, float(BIG), BIG + 2, 2**62 + 1, 2**62, -(2**63 - 1),
          MAX_METADATA_INT, True, False, None, "1", "a", "", "9007199254740993"]


def value(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.2:
        return [rng.choice(VALUES) for _ in range(rng.randrange(0, 4))]
    if roll < 0.25:
        return {"nested": rng.choice(VALUES)}
    return rng.choice(VALUES)


def documents(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{k: value(rng) for k in ("a", "b", "c") if rng.random() < 0.7} for _ in range(n)]


def random_filter(rng: random.Random) -> dict:
    out: dict = {}
    for key in rng.sample(["a", "b", "c", "zz"], rng.randrange(1, 3)):
        op = rng.choice(["value", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"])
        scalar = rng.choice(VALUES)
        if op == "value":
            out[key] = scalar
        elif op in ("$in", "$nin"):
            out[key] = {op: rng.sample(VALUES, rng.randrange(1, 4))}
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            out[key] = {op: rng.choice([BIG, BIG + 1, 2**62, 1.5, 0])}
        elif op == "$exists":
            out[key] = {"$exists": rng.random() < 0.5}
        else:
            out[key] = {op: scalar}
    return out


@pytest.mark.parametrize("metadata, said", [
    ({"x": math.nan}, "`metadata.x` is nan"),
    ({"x": [1, math.inf]}, "`metadata.x[1]` is inf"),
    ({"x": {"y": -math.inf}}, "`metadata.x.y` is -inf"),
    ({"id": 2**63}, "`metadata.id` is an integer of 19 digits, beyond the 64-bit range"),
    ({"id": -(2**64)}, "beyond the 64-bit range"),
    ({"id": 10**400}, "an integer of 401 digits"),
])
def test_values_outside_the_model_are_refused_naming_the_place(metadata, said):
    with pytest.raises(WhitevecError) as err:
        parse_document({"id": "d", "text": "t", "metadata": metadata}, "documents[3]")
    assert str(err.value).startswith("documents[3]: ") and said in str(err.value)


def test_edges_of_the_model_are_accepted_exactly():
    meta = {"max": MAX_METADATA_INT, "min": -MAX_METADATA_INT, "big": BIG + 1, "f": 1e308}
    assert parse_document({"id": "d", "text": "t", "metadata": meta}, "x").metadata == meta


def test_a_jsonl_import_names_the_line_with_nan(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "bad", "metadata": {"score": NaN}}\n')
    with pytest.raises(WhitevecError, match=r"docs.jsonl:2: `metadata.score` is nan"):
        read_jsonl(path)


@pytest.mark.parametrize("key", ["a\nb", "tab\there", "nul\x00", "bell\x07", 'q"', "b\\s"])
def test_filter_keys_follow_one_rule_on_every_backend(key):
    with pytest.raises(filters.FilterError, match="may not contain"):
        filters.parse({key: 1})


def test_sqlite_the_change_log_and_python_agree_on_big_integers(tmp_path):
    metas = documents(400, seed=3)
    DocumentStore.write(tmp_path / "docs.sqlite", [Document(f"d{i}", "t", m) for i, m in enumerate(metas)])
    store = DocumentStore(tmp_path / "docs.sqlite")
    log = ChangeLog(tmp_path / CHANGES_FILE, len(metas), 2)
    added = documents(150, seed=4)
    keys = log.apply([Document(f"n{i}", "t", m) for i, m in enumerate(added)], np.zeros((len(added), 2)), [], [], [])
    rng = random.Random(5)
    selective = 0
    for _ in range(400):
        raw = random_filter(rng)
        flt = filters.parse(json.loads(json.dumps(raw)))
        want = [i for i, m in enumerate(metas) if reference(m, raw)]
        assert store.match(flt).tolist() == want, raw
        assert [i for i, m in enumerate(metas) if filters.matches(m, flt)] == want, raw
        assert sorted(log.match(flt).tolist()) == [int(k) for k, m in zip(keys, added) if reference(m, raw)], raw
        selective += 0 < len(want) < len(metas)
    assert selective > 100
    # the case the float tags got wrong: 2^53 + 1 is not 2^53
    exact = filters.parse({"a": BIG + 1})
    assert all(metas[i]["a"] == BIG + 1 or BIG + 1 in metas[i]["a"] for i in store.match(exact).tolist())
    store.close()
    log.close()


@pytest.mark.milvus
def test_milvus_gives_the_reference_hits_on_big_integers(tmp_path):
    from pymilvus import MilvusClient

    from whitevec.index.milvus import MilvusRetriever

    client = MilvusClient(str(tmp_path / "milvus.db"))
    try:
        metas = documents(240, seed=6)
        n, dim = len(metas), 8
        docs = [Document(f"d{i}", f"text {i}", m) for i, m in enumerate(metas)]
        raw = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
        milvus = MilvusRetriever.create(client, "wv_values_1", docs, raw, IndexSpec("flat"), l2_normalize)
        DocumentStore.write(tmp_path / "docs.sqlite", docs)
        faiss = FaissRetriever(VectorIndex.build(l2_normalize(raw), IndexSpec("flat"), use_gpu=False),
                               DocumentStore(tmp_path / "docs.sqlite"), ChangeLog(tmp_path / CHANGES_FILE, n, dim),
                               l2_normalize)
        query = l2_normalize(raw[:1])
        rng = random.Random(7)
        for _ in range(60):
            raw_filter = random_filter(rng)
            flt = filters.parse(json.loads(json.dumps(raw_filter)))
            want = {f"d{i}" for i, m in enumerate(metas) if reference(m, raw_filter)}
            for backend in (milvus, faiss):
                hits = asyncio.run(backend.search(query, n, SearchParams(), flt))[0]
                assert {h.document.id for h in hits} == want, (type(backend).__name__, raw_filter)
        faiss.close()
        milvus.close()
    finally:
        client.close()


def test_milvus_tags_keep_integers_exact_beyond_float_precision():
    """Tags are what Milvus compares: neighbours of 2^53 and 2^63 - 1 must stay apart (a float repr merged
    them), and an integral float still meets its integer."""
    from whitevec.index.milvus_fields import tag

    for big in (2**53, 2**63 - 1, -(2**63) + 1):
        assert tag(big) != tag(big + 1) and tag(big) == f"n:{big}"
    assert tag(float(2**53)) == tag(2**53) and tag(2.5) == "n:2.5" and tag(-0.0) == tag(0)
