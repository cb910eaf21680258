"""What whitevec writes into a Milvus collection's derived fields, and the filter expressions over them: the
typed copy of the metadata that filters compare (`typed`, with `tag` per scalar) and the BM25 `terms` field.

Milvus's JSON comparisons treat `true` as `1` and a missing key as null, whitevec's filters do not (measured on
Milvus Lite 2.5: `metadata["g"] == 1` matched 1, 1.0 and true; `is null` matched null and a missing key), so
each scalar is stored as a tagged string ("n:1", "b:true", "s:…", "z:"; a list as the list of its elements'
tags, an object as "o:") and filters compare those. Range operators are checked by whitevec
(index/filters.py's reference) over the documents Milvus finds with the key.

The `terms` field holds the words whitevec's analyzer cut from the text (index/analyzer.py, as on FAISS), each
written as a short hash in lower-case letters and digits that any Milvus tokenizer keeps whole, so Milvus's BM25
function counts exactly whitevec's words (its own tokenizers cut Chinese and accents differently).
"""

from __future__ import annotations

import hashlib
import json

from .filters import CONTROL, Filter

#: Longest text and id a collection stores (Milvus VARCHAR limit, in bytes).
MAX_VARCHAR = 65_535

#: How a version's `terms` field writes a word (recorded in its manifest: a later form never reads it).
TERMS_FORM = "blake2b-48-base36"
#: Most hits one Milvus search returns (Milvus's topk limit): a lexical search checked by whitevec stops there.
MAX_LIMIT = 16_384
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def term_token(term: str) -> str:
    """A word as one token any Milvus tokenizer keeps whole: 48 bits of its hash in base 36 (≤ 10 characters)."""
    n = int.from_bytes(hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=6).digest(), "big")
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if n == 0:
            return out


def terms_text(terms: list[str]) -> str:
    """A document's words for the `terms` field, in order; the words past what the field holds (about 6,000)
    are left out (documented: on Milvus the rest of a very long text does not count lexically)."""
    out, size = [], 0
    for term in terms:
        token = term_token(term)
        size += len(token) + (1 if out else 0)
        if size > MAX_VARCHAR:
            break
        out.append(token)
    return " ".join(out)


def tag(value: object) -> str | None:
    """The typed form a filter compares; None for values no equality matches (objects, lists)."""
    if value is None:
        return "z:"
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, int):
        return f"n:{value}"  # exact at any size, as SQLite and the Python reference compare
    if isinstance(value, float):
        return f"n:{int(value)}" if value.is_integer() else f"n:{value!r}"  # 2.0 equals 2; values are finite
    if isinstance(value, str):
        return "s:" + value
    return None


def typed(metadata: dict) -> dict:
    """Every key with its tag, a list's element tags, or "o:" (an object: present, never equal)."""
    out: dict = {}
    for key, value in metadata.items():
        if isinstance(value, list):
            out[key] = [t for t in map(tag, value) if t is not None]
        else:
            out[key] = tag(value) or "o:"
    return out


def _equals(key: str, values: tuple) -> str:
    tags = list(dict.fromkeys(t for t in map(tag, values) if t is not None))
    if not tags:
        return "false"
    # Milvus Lite 2.5 refuses `typed["k"] in [...]` ("left side of 'in' must be a field reference")
    listed = json.dumps(tags, ensure_ascii=False)
    scalar = " or ".join(f'typed["{key}"] == {json.dumps(t, ensure_ascii=False)}' for t in tags)
    return f'({scalar} or json_contains_any(typed["{key}"], {listed}))'


def milvus_filter(where: Filter | None) -> tuple[str, bool]:
    """A Milvus boolean expression for whitevec's filter, and whether it is exact: a range operator, or a
    value with a control character (Milvus's expression strings have no \\u escapes), becomes "the key
    exists" (a superset), and the caller checks the candidates with `matches`.
    Keys were checked by the filter parser (no quote, backslash or control character)."""
    if not where:
        return "", True
    clauses, exact = [], True
    for c in where:
        has = f'exists typed["{c.key}"]'
        if c.op in ("in", "nin") and any(isinstance(v, str) and CONTROL.search(v) for v in c.values):
            clauses += [has] if c.op == "in" else []  # $nin: any document may pass; the check decides
            exact = False
        elif c.op == "in":
            clauses.append(_equals(c.key, c.values))
        elif c.op == "nin":  # a missing key makes Milvus's `not (...)` null: name that case
            clauses.append(f"(not {has} or not {_equals(c.key, c.values)})")
        elif c.op == "exists":
            clauses.append(has if c.values[0] else f"(not {has})")
        else:
            clauses.append(has)
            exact = False
    return " and ".join(clauses), exact
