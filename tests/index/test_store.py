"""Corpus: a served version's live documents read a page at a time (issue 10: a DocumentStore never
loads the whole corpus), against a plain list built from the same rows."""

import shutil

import numpy as np
import pytest

from whitevec.index.store import Corpus, Document, DocumentStore


@pytest.fixture
def built(tmp_path, monkeypatch):
    """50 built rows, rows 3, 7 and 20 gone, two documents added since; pages of 7 rows."""
    monkeypatch.setattr(Corpus, "PAGE", 7)
    folder = tmp_path / "v1"
    folder.mkdir()
    docs = [Document(f"d{i}", f"text {i}", {"n": i}) for i in range(50)]
    DocumentStore.write(folder / "docs.sqlite", docs)
    gone = np.zeros(50, bool)
    gone[[3, 7, 20]] = True
    added = [Document("d3", "d3 replaced", {}), Document("x", "added", {"a": 1})]
    return folder, docs, gone, added


def test_a_corpus_is_the_live_rows_in_order_then_the_added_ones_read_in_pages(built, monkeypatch):
    folder, docs, gone, added = built
    pages: list[int] = []
    page = DocumentStore.page
    monkeypatch.setattr(DocumentStore, "page", lambda self, after, limit: pages.append(limit) or page(self, after, limit))
    corpus = Corpus(folder / "docs.sqlite", gone, added)
    want = [d for i, d in enumerate(docs) if not gone[i]] + added
    assert len(corpus) == len(want) == 49
    assert list(corpus) == want
    assert list(corpus) == want  # re-iterable: a build reads it more than once
    assert set(pages) == {7} and len(pages) == 2 * 9  # 50 rows: 8 pages of at most 7, one empty; twice
    assert list(Corpus(folder / "docs.sqlite", None, [])) == docs  # nothing gone, nothing added


def test_merged_replaces_in_place_and_appends_new_ids(built):
    folder, docs, gone, added = built
    corpus = Corpus(folder / "docs.sqlite", gone, added)
    new = [Document("d5", "five again", {}), Document("x", "x again", {}), Document("d7", "seven is back", {}),
           Document("y", "brand new", {})]
    merged = corpus.merged(new)
    want = [new[0] if d.id == "d5" else d for i, d in enumerate(docs) if not gone[i]]
    want += [added[0], new[1], new[2], new[3]]  # d7 was deleted, so it comes back as a new document
    assert list(merged) == want and len(merged) == len(want)
    assert list(corpus) == [d for i, d in enumerate(docs) if not gone[i]] + added  # the original is unchanged


def test_a_corpus_reads_on_after_its_version_folder_is_removed(built):
    folder, _, gone, added = built
    corpus = Corpus(folder / "docs.sqlite", gone, added)
    shutil.rmtree(folder)  # a rollback and prune retired the version while a rebuild reads it
    assert [d.id for d in corpus][:3] == ["d0", "d1", "d2"] and len(list(corpus)) == 49
    corpus.close()
