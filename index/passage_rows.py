"""How a collection's documents are the rows of its index: whole (one row each), or split into passages —
rows written, replaced and deleted a document at a time, and hits read back as documents.

Every backend holds rows (id, text, metadata, vectors) and knows nothing of passages. A `Passages`
layout writes each document as rows of its passages: the first (the *head*) keeps the document's id, its
whole text and the number of rows; the others are `<id>␟<stamp>␟<n>`, a stamp new at every write of the
document. Every row carries the document's metadata (filters apply per document) and its passage's
character offsets into the document's text. An upsert writes the new passages first and the head last,
then deletes the old ones, in one change: on FAISS that is one transaction; where a backend writes rows
one batch at a time (Milvus), a crash in between leaves rows whose stamp is not their head's, and reads
ignore them — a document is its head and the rows of the head's stamp, so it is never half old, half new.

`Whole` is the layout of a collection without passages: rows are documents, and every answer is as it
was before passages existed. Callers use either through `Layout` and never ask which it is.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from whitevec.models.errors import WhitevecError
from whitevec.models.passages import PassageSetting, Span, TokenOffsets, split

from . import filters
from .filters import Filter
from .hybrid import FusedHit, Fusion, Mode, search as hybrid_search
from .retriever import ChangeResult, Retriever
from .spec import SearchParams
from .store import Document, Documents

#: The head row's key: {"text": the document's text, "stamp": its write's stamp, "of": its rows}.
HEAD = "whitevec:document"
#: Every row's key: {"start", "end": the passage in the document's text, "stamp"}.
PART = "whitevec:passage"
#: Separates a document id from its passage rows' stamp and number (a control character no id of a
#: collection with passages may hold).
SEP = "\x1f"
#: The best passages of a hit shown (the UI highlights them).
SHOWN = 3
#: How many passages a grouped search first asks for per document wanted; it asks again for more (×4) while
#: fewer than k distinct documents came back and more rows exist, up to MAX_ROWS.
OVERFETCH = 4
MAX_ROWS = 8192
#: A document's rows each carry its metadata: at most this many bytes of metadata over all of its passages
#: (a 64 KiB metadata object on a document of 100 passages would write 6.4 MB).
MAX_COPIED_METADATA = 4 * 1024 * 1024

Group = Literal["max", "mean_top", "none"]


class ReservedName(WhitevecError):
    """A document or a filter of a collection with passages uses an id character or a metadata key whitevec
    keeps, or a document would copy more metadata into its passages than a collection holds."""


@dataclass
class DocumentHit:
    """One hit as /search answers it: a document, its score, and (with passages) the passages that matched."""

    score: float
    document: Document
    best: FusedHit
    passages: list[dict] | None = None

    def explain(self) -> dict:
        """Both sides' view of the best passage (of the document itself without passages)."""
        return self.best.explain()


@dataclass(frozen=True)
class Grouping:
    """How passages become documents: `max` (a document scores its best passage), `mean_top` (the mean of
    its best `top`), `none` (every passage its own hit)."""

    how: Group = "max"
    top: int = 3


class Layout(Protocol):
    """What a collection's rows are, for everything that writes or reads them."""

    @property
    def setting(self) -> PassageSetting | None:
        """The passage setting the rows were split with; None for whole documents."""
        ...

    def check(self, documents: Sequence[Document]) -> None:
        """ReservedName for a document this layout cannot hold."""
        ...

    def rows(self, documents: Documents) -> Documents:
        """The rows that hold `documents` (in order; a document's head last); ReservedName as `check`."""
        ...

    @property
    def rows_are_documents(self) -> bool:
        """A row is a whole document: changed rows can be carried to another version as they are."""
        ...

    def check_filter(self, where: Filter | None) -> None:
        """ReservedName for a filter on a key whitevec keeps."""
        ...

    def visible_types(self, types: dict[str, set[str]]) -> dict[str, set[str]]:
        """The metadata keys users wrote (filter warnings), without whitevec's own."""
        ...

    def manifest(self, documents: int, rows: int) -> dict | None:
        """What a version built with this layout records (None: nothing, as before passages)."""
        ...

    def count(self, retriever: Retriever) -> int:
        """Live documents."""
        ...

    def count_after(self, retriever: Retriever, upsert_ids: list[str], deletes: list[str]) -> int: ...

    def change(self, retriever: Retriever, upserts: list[Document], rows: list[Document], raw: np.ndarray,
               deletes: list[str]) -> ChangeResult:
        """Replace `upserts` (written as `rows`, `raw` their vectors) and delete `deletes` (document ids), in
        one change of the retriever; counts are documents."""
        ...

    def get(self, retriever: Retriever, doc_id: str) -> tuple[Document, list[Span] | None] | None:
        """A live document and its passages (None without passages); None when there is no such document."""
        ...

    def documents(self, retriever: Retriever, current: Documents | None, added: list[Document]) -> Documents:
        """Whole documents to build from: `current` (the served rows, when given) with `added` over them (an id
        in both: the added one, in its place)."""
        ...

    def changed(self, retriever: Retriever, row_ids: list[str]) -> tuple[list[str], list[str]]:
        """The document ids the changed rows `row_ids` belong to: (live now, deleted)."""
        ...

    async def search(self, retriever: Retriever, mode: Mode, queries: list[str], vectors: np.ndarray | None,
                     k: int, params: SearchParams, where: Filter | None, fusion: Fusion, explain: bool,
                     grouping: Grouping) -> tuple[list[list[DocumentHit]], list[str]]: ...


class Whole:
    """One row per document: the layout of every collection without passages."""

    setting = None

    def check(self, documents: Sequence[Document]) -> None:
        """Any document fits."""

    def rows(self, documents: Documents) -> Documents:
        return documents  # a lazy corpus stays lazy

    rows_are_documents = True

    def check_filter(self, where: Filter | None) -> None:
        """Any key is a user's."""

    def visible_types(self, types: dict[str, set[str]]) -> dict[str, set[str]]:
        return types

    def manifest(self, documents: int, rows: int) -> dict | None:
        return None

    def count(self, retriever: Retriever) -> int:
        return retriever.count()

    def count_after(self, retriever: Retriever, upsert_ids: list[str], deletes: list[str]) -> int:
        return retriever.count_after(upsert_ids, deletes)

    def change(self, retriever: Retriever, upserts: list[Document], rows: list[Document], raw: np.ndarray,
               deletes: list[str]) -> ChangeResult:
        return retriever.change(rows, raw, deletes)

    def get(self, retriever: Retriever, doc_id: str) -> tuple[Document, list[Span] | None] | None:
        doc = retriever.get(doc_id)
        return None if doc is None else (doc, None)

    def documents(self, retriever: Retriever, current: Documents | None, added: list[Document]) -> Documents:
        if current is None:
            return added
        return current.merged(added) if added else current  # the lazy Corpus of the served version

    def changed(self, retriever: Retriever, row_ids: list[str]) -> tuple[list[str], list[str]]:
        live = {d.id for d in retriever.fetch(row_ids)[0]}
        return [i for i in row_ids if i in live], [i for i in row_ids if i not in live]

    async def search(self, retriever: Retriever, mode: Mode, queries: list[str], vectors: np.ndarray | None,
                     k: int, params: SearchParams, where: Filter | None, fusion: Fusion, explain: bool,
                     grouping: Grouping) -> tuple[list[list[DocumentHit]], list[str]]:
        found, said = await hybrid_search(retriever, mode, queries, vectors, k, params, where, fusion, explain)
        return [[DocumentHit(h.score, h.document, h) for h in hits] for hits in found], said


WHOLE = Whole()
_HEADS: Filter = filters.parse({HEAD: {"$exists": True}})


@dataclass
class Passages:
    """Documents split into passages of `setting` by `tokenizer` (the served model's)."""

    passage_setting: PassageSetting
    tokenizer: TokenOffsets
    built: int | None = None  # documents the version was built with (its count until the first change)
    _count: tuple[int, int] | None = field(default=None, repr=False)  # (journal head, documents) last counted

    rows_are_documents = False

    def check_filter(self, where: Filter | None) -> None:
        for c in where or ():
            if c.key in (HEAD, PART):
                raise ReservedName(f"filter key {c.key!r} is whitevec's own in a collection with passages; filter on "
                                   "your documents' metadata keys")

    def visible_types(self, types: dict[str, set[str]]) -> dict[str, set[str]]:
        return {k: v for k, v in types.items() if k not in (HEAD, PART)}

    @property
    def setting(self) -> PassageSetting | None:
        return self.passage_setting

    def check(self, documents: Sequence[Document]) -> None:
        for i, d in enumerate(documents):
            _check(d, f"documents[{i}]")

    def rows(self, documents: Documents) -> list[Document]:
        out: list[Document] = []
        for d in documents:
            _check(d, f"document {d.id[:80]!r}")
            spans = split(d.text, self.tokenizer, self.passage_setting) or [Span(0, len(d.text))]
            copied = len(spans) * len(json.dumps(d.metadata, ensure_ascii=False).encode("utf-8"))
            if len(spans) > 1 and copied > MAX_COPIED_METADATA:
                raise ReservedName(f"document {d.id[:80]!r}: its metadata is copied into each of its {len(spans)} "
                                   f"passages ({copied} bytes, above {MAX_COPIED_METADATA}); keep large payloads "
                                   "elsewhere and store a key to them, or give the collection longer passages")
            stamp = secrets.token_hex(4)
            rows = [Document(f"{d.id}{SEP}{stamp}{SEP}{n}" if n else d.id, d.text[s.start:s.end],
                             {**d.metadata, PART: {"start": s.start, "end": s.end, "stamp": stamp}})
                    for n, s in enumerate(spans)]
            rows[0].metadata[HEAD] = {"text": d.text, "stamp": stamp, "of": len(spans)}
            out += rows[1:] + rows[:1]  # the head last: a document changes when its head does
        return out

    def manifest(self, documents: int, rows: int) -> dict | None:
        return {**self.passage_setting.to_dict(), "documents": documents, "rows": rows}

    def count(self, retriever: Retriever) -> int:
        head = retriever.sequence()
        if head == 0 and self.built is not None:  # no change since the build: its count, without a scan
            return self.built
        if self._count is None or self._count[0] != head or head == 0:  # 0: a backend without a journal
            self._count = (head, retriever.count(_HEADS))
        return self._count[1]

    def count_after(self, retriever: Retriever, upsert_ids: list[str], deletes: list[str]) -> int:
        present = set(self._heads(retriever, list(dict.fromkeys([*upsert_ids, *deletes]))))
        gone = {i for i in deletes if i in present and i not in upsert_ids}
        return self.count(retriever) + len(set(upsert_ids) - present) - len(gone)

    def change(self, retriever: Retriever, upserts: list[Document], rows: list[Document], raw: np.ndarray,
               deletes: list[str]) -> ChangeResult:
        before = self.count(retriever)
        ids = [d.id for d in upserts]
        asked = list(dict.fromkeys(deletes))
        heads = self._heads(retriever, list(dict.fromkeys(ids + asked)))
        kept = {r.id for r in rows}
        stale = [r for h in heads.values() for r in _row_ids(h) if r not in kept]
        missing = [i for i in asked if i not in heads]
        deleted = [i for i in asked if i in heads and i not in ids]
        if not upserts and not stale:
            return ChangeResult(0, 0, missing)
        retriever.change(rows, raw, stale)
        self._count = (retriever.sequence(), before + len(set(ids) - set(heads)) - len(deleted))
        return ChangeResult(len(upserts), len([i for i in asked if i in heads]), missing)

    def get(self, retriever: Retriever, doc_id: str) -> tuple[Document, list[Span] | None] | None:
        head = self._heads(retriever, [doc_id]).get(doc_id)
        if head is None:
            return None
        rows = {r.id: r for r in retriever.fetch(_row_ids(head))[0]}
        spans = [Span(r.metadata[PART]["start"], r.metadata[PART]["end"]) for i in _row_ids(head)
                 if (r := rows.get(i)) is not None]
        return _document(head), spans

    def documents(self, retriever: Retriever, current: Documents | None, added: list[Document]) -> Documents:
        whole = {d.id: _document(d) for d in (current or []) if HEAD in d.metadata}
        for d in added:
            whole[d.id] = d
        return list(whole.values())

    def changed(self, retriever: Retriever, row_ids: list[str]) -> tuple[list[str], list[str]]:
        ids = list(dict.fromkeys(i.split(SEP, 1)[0] for i in row_ids))
        live = self._heads(retriever, ids)
        return [i for i in ids if i in live], [i for i in ids if i not in live]

    async def search(self, retriever: Retriever, mode: Mode, queries: list[str], vectors: np.ndarray | None,
                     k: int, params: SearchParams, where: Filter | None, fusion: Fusion, explain: bool,
                     grouping: Grouping) -> tuple[list[list[DocumentHit]], list[str]]:
        depth = k if grouping.how == "none" else k * OVERFETCH
        while True:
            found, said = await hybrid_search(retriever, mode, queries, vectors, depth, params, where, fusion, explain)
            ids = list(dict.fromkeys(h.document.id.split(SEP, 1)[0] for hits in found for h in hits))
            heads = await asyncio.to_thread(self._heads, retriever, ids)
            out = [self._group(hits, heads, k, grouping) for hits in found]
            short = any(len(o) < k and len(hits) == depth for o, hits in zip(out, found))
            if not short or depth >= MAX_ROWS:
                return out, said
            depth = min(depth * OVERFETCH, MAX_ROWS)

    @staticmethod
    def _group(hits: list[FusedHit], heads: dict[str, Document], k: int, grouping: Grouping) -> list[DocumentHit]:
        """One query's passage hits (ranked) as up to k document hits; rows of a stale stamp are skipped."""
        per_doc: dict[str, list[FusedHit]] = {}
        for h in hits:
            doc_id = h.document.id.split(SEP, 1)[0]
            head = heads.get(doc_id)
            if head is None or h.document.metadata[PART]["stamp"] != head.metadata[HEAD]["stamp"]:
                continue
            if grouping.how == "none":
                per_doc[h.document.id] = [h]
            else:
                per_doc.setdefault(doc_id, []).append(h)
        out = []
        for key, group in per_doc.items():
            doc_id = key.split(SEP, 1)[0]
            scores = [h.score for h in group]
            if grouping.how == "mean_top":  # passages beyond the candidates count 0; a short document, all it has
                top = min(grouping.top, heads[doc_id].metadata[HEAD]["of"])
                score = float(sum(scores[:top]) / top)
            else:
                score = scores[0]
            shown = [{"start": h.document.metadata[PART]["start"], "end": h.document.metadata[PART]["end"],
                      "score": h.score} for h in group[:SHOWN]]
            out.append(DocumentHit(score, _document(heads[doc_id]), group[0], shown))
        out.sort(key=lambda h: -h.score)  # stable: ties keep the best passage's rank
        return out[:k]

    @staticmethod
    def _heads(retriever: Retriever, ids: list[str]) -> dict[str, Document]:
        """The live head rows of these document ids."""
        if not ids:
            return {}
        return {d.id: d for d in retriever.fetch(ids)[0] if HEAD in d.metadata}


def layout_for(setting: PassageSetting | None, tokenizer: TokenOffsets, built: int | None = None) -> Layout:
    """The layout of rows split with `setting` by `tokenizer` (a version of `built` documents); whole
    documents for None."""
    return WHOLE if setting is None else Passages(setting, tokenizer, built)


def resplit_report(manifest: dict, before: PassageSetting | None) -> dict:
    """What a rebuild's job result says of passages: the setting, documents and rows, and whether the
    documents were split anew (the served version had another setting, or none); {} when neither has any."""
    section = manifest.get("passages")
    if section is None:
        return {} if before is None else {"passages": None, "resplit": "passages off: one row per document"}
    now = PassageSetting(section["max_tokens"], section["overlap"])
    said = ("split as the served version was" if now == before else
            f"split anew: the served version had {'whole documents' if before is None else before.to_dict()}")
    return {"documents": section["documents"], "passages": section, "resplit": said}


def _check(d: Document, where: str) -> None:
    """ReservedName when a document uses what a collection with passages keeps for itself."""
    if SEP in d.id:
        raise ReservedName(f"{where}: `id` holds the control character U+001F, which a collection with passages "
                           "uses to name a document's passages; remove it from the id")
    reserved = [key for key in d.metadata if key in (HEAD, PART)]
    if reserved:
        raise ReservedName(f"{where}: metadata key {reserved[0]!r} is whitevec's own in a collection with passages; "
                           "rename it")


def setting_of(manifest: dict | None) -> PassageSetting | None:
    """The passage setting a version was built with (None: whole documents)."""
    section = (manifest or {}).get("passages")
    return None if not section else PassageSetting(section["max_tokens"], section["overlap"])


def _row_ids(head: Document) -> list[str]:
    """Every row of the document whose head is `head`, the head first."""
    h = head.metadata[HEAD]
    return [head.id] + [f"{head.id}{SEP}{h['stamp']}{SEP}{n}" for n in range(1, h["of"])]


def _document(head: Document) -> Document:
    """The document a head row holds: its id, whole text and own metadata."""
    return Document(head.id, head.metadata[HEAD]["text"],
                    {k: v for k, v in head.metadata.items() if k not in (HEAD, PART)})
