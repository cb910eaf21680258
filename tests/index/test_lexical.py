"""BM25 against the formula written out document by document (float64), on random corpora, before and after
random upserts and deletes, with and without filters; the postings part saves, loads and refuses damage."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from whitevec.index import analyzer
from whitevec.index.lexical import BM25, LexicalIndex, Live, Postings

WORDS = ["rain", "Rain", "café", "cafe", "ＡＢＣ", "abc", "guitar", "天气", "预报", "天气预报", "吉他", "男人", "a", "the",
         "42", "x-ray", "naïve", "弹", "north", "south"]


def reference_scores(texts: dict[int, str], query: str, params: BM25) -> dict[int, float]:
    """BM25 straight from the formula, document by document."""
    docs = {i: Counter(analyzer.analyze(t)) for i, t in texts.items()}
    lengths = {i: sum(c.values()) for i, c in docs.items()}
    n = len(docs)
    avgdl = (sum(lengths.values()) / n or 1.0) if n else 1.0
    scores: dict[int, float] = {}
    for term in dict.fromkeys(analyzer.analyze(query)):
        df = sum(1 for c in docs.values() if term in c)
        if df == 0:
            continue
        idf = float(np.log(1 + (n - df + 0.5) / (df + 0.5)))
        for i, c in docs.items():
            if term in c:
                tf = c[term]
                scores[i] = scores.get(i, 0.0) + idf * tf * (params.k1 + 1) / (
                    tf + params.k1 * (1 - params.b + params.b * lengths[i] / avgdl))
    return scores


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) + rng.choice(["", "。", "!", " ..."])


def check(index: LexicalIndex, live: Live, texts: dict[int, str], query: str, k: int,
          allowed: set[int] | None = None) -> None:
    base = index.postings.count
    rows = None if allowed is None else np.array(sorted(i for i in allowed if i < base), np.int64)
    keys = None if allowed is None else np.array(sorted(i for i in allowed if i >= base), np.int64)
    scores, ids = index.search(analyzer.analyze(query), k, live, rows, keys)
    want = reference_scores(texts, query, index.params)
    if allowed is not None:
        want = {i: s for i, s in want.items() if i in allowed}
    best = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    assert [int(i) for i in ids] == [i for i, _ in best], query
    np.testing.assert_allclose(scores, [s for _, s in best], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_bm25_equals_the_formula_before_and_after_changes(seed):
    rng = random.Random(seed)
    params = BM25(k1=rng.choice([0.9, 1.2, 2.0]), b=rng.choice([0.0, 0.75, 1.0]))
    built = [text(rng) for _ in range(rng.randint(1, 60))]
    index = LexicalIndex(Postings.build(built), params)
    texts = dict(enumerate(built))
    gone = np.zeros(len(built), bool)
    keys: list[int] = []
    next_key = len(built)
    for round_ in range(4):
        live = Live(gone.copy(), np.array(keys, np.int64))
        for _ in range(8):
            query = text(rng)
            check(index, live, texts, query, rng.randint(1, 15))
            allowed = {i for i in texts if rng.random() < 0.5}
            check(index, live, texts, query, rng.randint(1, 15), allowed)
        # a change: delete some built rows and added keys, add documents (an upsert is both)
        for row in rng.sample(range(len(built)), k=min(len(built), rng.randint(0, 5))):
            gone[row] = True
            texts.pop(row, None)
        for key in rng.sample(keys, k=min(len(keys), rng.randint(0, 3))):
            keys.remove(key)
            texts.pop(key)
        new = [text(rng) for _ in range(rng.randint(0, 6))]
        new_keys = list(range(next_key, next_key + len(new)))
        next_key += len(new)
        index.added.add(new_keys, new)
        keys += new_keys
        texts.update(zip(new_keys, new))


def test_the_dense_sweep_and_the_sorted_path_agree_with_the_formula():
    """Many postings per row (a sweep over every row) and few (a sort): both give the formula's ranking."""
    rng = random.Random(7)
    built = [" ".join(rng.choice(["rain", "sun", "天气"]) for _ in range(rng.randint(1, 5))) for _ in range(300)]
    index = LexicalIndex(Postings.build(built), BM25())
    gone = np.zeros(300, bool)
    gone[rng.sample(range(300), 40)] = True
    live = Live(gone, np.zeros(0, np.int64), int(gone.sum()))
    texts = {i: t for i, t in enumerate(built) if not gone[i]}
    for query in ("rain sun", "天气", "absent rain"):
        check(index, live, texts, query, 25)


def test_empty_queries_corpora_and_k():
    index = LexicalIndex(Postings.build(["rain today", ""]), BM25())
    live = Live(np.zeros(2, bool), np.zeros(0, np.int64))
    for terms, k in (([], 5), (["absent"], 5), (["rain"], 0)):
        scores, ids = index.search(terms, k, live)
        assert len(scores) == len(ids) == 0
    everything_gone = Live(np.ones(2, bool), np.zeros(0, np.int64))
    assert len(index.search(["rain"], 5, everything_gone)[1]) == 0
    empty = LexicalIndex(Postings.build([]), BM25())
    assert len(empty.search(["rain"], 5, Live(np.zeros(0, bool), np.zeros(0, np.int64)))[1]) == 0


def test_postings_save_load_and_damage(tmp_path):
    built = ["天气预报说明天下雨", "It rains in the north", "", "naïve ＡＢＣ café"]
    postings = Postings.build(built)
    postings.save(tmp_path / "lexical.npz")
    again = Postings.load(tmp_path / "lexical.npz")
    assert again.terms == postings.terms and np.array_equal(again.rows, postings.rows)
    assert np.array_equal(again.lengths, postings.lengths)
    rows, tf, lengths = again.of("cafe")
    assert rows.tolist() == [3] and tf.tolist() == [1.0] and lengths.tolist() == [3.0]
    raw = (tmp_path / "lexical.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(Exception):
        Postings.load(tmp_path / "bad.npz")


def test_bm25_knobs_are_checked():
    with pytest.raises(ValueError, match="k1"):
        BM25(k1=-1)
    with pytest.raises(ValueError, match="b"):
        BM25(b=1.5)
