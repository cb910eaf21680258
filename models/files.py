"""Reading user files line by line: bad UTF-8, bad JSON and too deep JSON are errors naming the line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import WhitevecError


def check_unicode(text: str, where: str) -> None:
    """Refuse lone UTF-16 surrogates: they are not text, and the tokenizer cannot encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WhitevecError(f"{where} contains a lone surrogate {text[exc.start]!r} at character {exc.start}; "
                            "send valid Unicode text") from None


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line, decoded as UTF-8."""
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise WhitevecError(f"{path.name}:{lineno}: not UTF-8 (byte {exc.start} of the line); "
                                        "save the file as UTF-8") from None
    except OSError as exc:
        raise WhitevecError(f"cannot read {path}: {exc.strerror or exc}") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for every non-blank line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise WhitevecError(f"{path.name}:{lineno}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise WhitevecError(f"{path.name}:{lineno}: JSON nested too deeply; flatten it") from None


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves the old or the new file, never half of one.
    The temp name is unique per writer, so two writers (threads, replicas) never share one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_json_atomic(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2).encode("utf-8"))
