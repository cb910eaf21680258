"""The files of one stored version, their checksums, and the error that says a version is damaged."""

from __future__ import annotations

import hashlib
from pathlib import Path

from whitevec.models.errors import WhitevecError

MANIFEST = "manifest.json"
POINTER = "ACTIVE"
WHITENING_FILE = "whitening.npz"
INDEX_FILE = "index.faiss"
DOCS_FILE = "docs.sqlite"
RAW_FILE = "raw.npy"  # float32 pooled vectors in document order: re-whitening without the model
MILVUS_FILE = "milvus.json"  # names the version's Milvus collection (backend milvus)
LEXICAL_FILE = "lexical.npz"  # the built rows' BM25 postings (index/lexical.py)
PARTS = (WHITENING_FILE, INDEX_FILE, DOCS_FILE)
MILVUS_PARTS = (WHITENING_FILE, MILVUS_FILE)
#: Parts a version has when it was built with them (raw vectors; the lexical index since hybrid search).
OPTIONAL_PARTS = (RAW_FILE, LEXICAL_FILE)


class VersionDamaged(WhitevecError):
    """A version's files do not match its manifest (damaged, truncated, or copied from another version)."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_parts(folder: Path) -> dict:
    """Size and SHA-256 of each part, for the manifest."""
    required = MILVUS_PARTS if (folder / MILVUS_FILE).is_file() else PARTS
    names = [*required, *(name for name in OPTIONAL_PARTS if (folder / name).is_file())]
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_digest(folder / name)} for name in names}
