"""Reading and checking documents for a rebuild; the same rules for the API and the CLI."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from whitevec.models.errors import WhitevecError
from whitevec.models.files import check_unicode, iter_jsonl

from .store import Document

FIELDS = {"id", "text", "metadata"}
#: Deepest metadata nesting accepted (JSON objects and arrays).
MAX_METADATA_DEPTH = 32
#: Longest import path accepted, in characters.
MAX_PATH_CHARS = 1024
#: Limits every backend can store (Milvus VARCHAR holds 65,535 bytes): the same on FAISS and Milvus.
MAX_ID_CHARS = 512
MAX_TEXT_BYTES = 65_535
MAX_METADATA_BYTES = 65_536
#: Integers in metadata fit a signed 64-bit integer: what SQLite stores exactly and Milvus's tags compare
#: exactly. One bound for every backend; a larger id goes in as a string.
MAX_METADATA_INT = 2**63 - 1


def _depth(value: object, limit: int) -> int:
    """Nesting depth of a JSON value, stopping once past `limit`."""
    if limit < 0:
        return 1
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def _bad_value(value: object, path: str) -> str | None:
    """The first metadata value outside whitevec's value model, said as what to fix (None when all fit).
    A NaN or an infinity (Python's json reads them; JSON has neither) would be stored and break every
    filtered search of the collection; an integer beyond 64 bits would compare inexactly on some backend."""
    if isinstance(value, float) and not math.isfinite(value):
        return (f"`{path}` is {value!r}, which JSON has no number for; store null, a finite number or a string")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_METADATA_INT:
        return (f"`{path}` is an integer of {len(str(abs(value)))} digits, beyond the 64-bit range every backend "
                f"compares exactly (±{MAX_METADATA_INT}); store it as a string")
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _bad_value(item, f"{path}[{key}]" if isinstance(value, list) else f"{path}.{key}")
        if found:
            return found
    return None


def parse_document(obj: object, where: str) -> Document:
    if not isinstance(obj, dict):
        raise WhitevecError(f"{where}: expected a JSON object with id, text and optional metadata")
    unknown = set(obj) - FIELDS
    if unknown:
        raise WhitevecError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: id, text, metadata")
    doc_id, text, metadata = obj.get("id"), obj.get("text"), obj.get("metadata")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise WhitevecError(f"{where}: `id` must be a non-empty string")
    if not isinstance(text, str) or not text.strip():
        raise WhitevecError(f"{where}: `text` must be a non-empty string")
    if metadata is not None and not isinstance(metadata, dict):
        raise WhitevecError(f"{where}: `metadata` must be a JSON object")
    if metadata and _depth(metadata, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise WhitevecError(f"{where}: `metadata` is nested more than {MAX_METADATA_DEPTH} levels deep; flatten it")
    bad = _bad_value(metadata, "metadata") if metadata else None
    if bad:
        raise WhitevecError(f"{where}: {bad}")
    if len(doc_id) > MAX_ID_CHARS:
        raise WhitevecError(f"{where}: `id` has {len(doc_id)} characters, above {MAX_ID_CHARS}; use a shorter id")
    check_unicode(doc_id, f"{where}: `id`")
    check_unicode(text, f"{where}: `text`")
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise WhitevecError(f"{where}: `text` is {size} bytes in UTF-8, above {MAX_TEXT_BYTES}; split it into "
                            "several documents (chapters, sections); a collection with passages splits each one "
                            "into passages for the model itself")
    if metadata:
        dumped = json.dumps(metadata, ensure_ascii=False)
        check_unicode(dumped, f"{where}: `metadata`")
        if len(dumped.encode("utf-8")) > MAX_METADATA_BYTES:
            raise WhitevecError(f"{where}: `metadata` is {len(dumped.encode('utf-8'))} bytes as JSON, above "
                                f"{MAX_METADATA_BYTES}; keep large payloads elsewhere and store a key to them")
    return Document(doc_id, text, metadata or {})


def read_jsonl(path: Path) -> list[Document]:
    """One document per line; the first bad line is an error naming it."""
    docs = []
    for lineno, obj in iter_jsonl(path):
        docs.append(parse_document(obj, f"{path.name}:{lineno}"))
    return docs


def duplicate_ids(docs: list[Document]) -> list[str]:
    """Ids that occur more than once, in first-seen order."""
    return [doc_id for doc_id, n in Counter(d.id for d in docs).items() if n > 1]


def check_count(n: int, max_documents: int) -> None:
    """A rebuild needs ≥ 2 documents (whitening needs variance) and at most WHITEVEC_MAX_DOCUMENTS."""
    if n < 2:
        raise WhitevecError(f"a rebuild needs at least 2 documents, got {n}")
    if n > max_documents:
        raise WhitevecError(f"{n} documents exceed the limit of {max_documents} (WHITEVEC_MAX_DOCUMENTS)")


def check_documents(docs: list[Document], max_documents: int) -> None:
    """check_count, and unique ids."""
    check_count(len(docs), max_documents)
    dupes = duplicate_ids(docs)
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:10]) + (f" and {len(dupes) - 10} more" if len(dupes) > 10 else "")
        raise WhitevecError(f"duplicate document ids: {shown}; ids must be unique within a rebuild")


class ImportFileMissing(WhitevecError):
    """A path names no file in the import folder (the service answers 404)."""


def resolve_import_path(import_dir: Path, path: str) -> Path:
    """A file inside the import folder; traversal and symlinks leading out are refused."""
    shown = repr(path[:80] + "…") if len(path) > 80 else repr(path)
    if "\x00" in path:
        raise WhitevecError(f"path {shown} contains a NUL character; give a plain file name")
    if len(path) > MAX_PATH_CHARS:
        raise WhitevecError(f"path {shown} is {len(path)} characters long, above {MAX_PATH_CHARS}; use a shorter name")
    root = import_dir.resolve()
    try:
        target = (root / path).resolve()
        inside = target.is_relative_to(root) and target != root
        is_file = inside and target.is_file()
    except (OSError, ValueError) as exc:
        raise WhitevecError(f"path {shown} cannot be used: {getattr(exc, 'strerror', None) or exc}") from None
    if not inside:
        raise WhitevecError(f"path {shown} is outside the import folder; put the file in the data dir's "
                            "import/ folder and give its name relative to it")
    if not is_file:
        raise ImportFileMissing(f"path {shown} is not a file in the import folder (the data dir's import/)")
    return target
