"""Reading and checking documents for a rebuild; the same rules for the API and the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from whitevec.models.errors import WhitevecError

from .store import Document

FIELDS = {"id", "text", "metadata"}


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
    return Document(doc_id, text, metadata or {})


def read_jsonl(path: Path) -> list[Document]:
    """One document per line; the first bad line is an error naming it."""
    docs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WhitevecError(f"{path.name}:{lineno}: not valid JSON ({exc.msg})") from exc
            docs.append(parse_document(obj, f"{path.name}:{lineno}"))
    return docs


def check_documents(docs: list[Document], max_documents: int) -> None:
    """A rebuild needs ≥ 2 documents (whitening needs variance) with unique ids."""
    if len(docs) < 2:
        raise WhitevecError(f"a rebuild needs at least 2 documents, got {len(docs)}")
    if len(docs) > max_documents:
        raise WhitevecError(f"{len(docs)} documents exceed the limit of {max_documents} (WHITEVEC_MAX_DOCUMENTS)")
    dupes = [doc_id for doc_id, n in Counter(d.id for d in docs).items() if n > 1]
    if dupes:
        shown = ", ".join(repr(d) for d in dupes[:10]) + (f" and {len(dupes) - 10} more" if len(dupes) > 10 else "")
        raise WhitevecError(f"duplicate document ids: {shown}; ids must be unique within a rebuild")


def resolve_import_path(import_dir: Path, path: str) -> Path:
    """A file inside the import folder; traversal and symlinks leading out are refused."""
    root = import_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or target == root:
        raise WhitevecError(f"path {path!r} is outside the import folder {root}; put the file there and "
                            "give its name relative to it")
    if not target.is_file():
        raise WhitevecError(f"path {path!r} is not a file in the import folder {root}")
    return target
