"""The metadata filter language of /search: parsed once, then evaluated by SQLite (docs.sqlite and the
change log), by Python (the reference, and Milvus's checks) and explained in warnings.

A filter is an object, AND over its keys; each key's condition is a value or an object of operators
that must all hold. Values compare with their JSON type (1 matches 1 and 1.0, never true or "1"); a
list in a document matches when any element does. `$ne`/`$nin` match documents without the key.
"""

from __future__ import annotations

import json
import math
import operator
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
RANGES = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
MAX_KEYS = 32
MAX_LIST = 1024  # values in one $in / $nin
MAX_KEY_CHARS = 256
#: Characters no filter key may hold, on any backend (Milvus expressions cannot quote them).
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FilterError(ValueError):
    """A filter the service cannot run; the message names the key and what to fix."""


@dataclass(frozen=True)
class Condition:
    """One test on one key. op: "in" (equals any of `values`), "nin" (none of them), a range
    operator ("$gt", ...) with one number, or "exists" with one bool."""

    key: str
    op: str
    values: tuple


Filter = tuple[Condition, ...]


def type_name(value: object) -> str:
    """The JSON type of a value, as messages name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(key: str, op: str, value: int | float) -> int | float:
    """A number a filter can compare: finite, and within float range (SQLite and Milvus compare floats);
    an integer beyond 64 bits is kept as the float SQLite would read it as."""
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        raise FilterError(f'filter key "{key}": {op} needs a finite number of at most about 1e308, got '
                          f"{str(value)[:40]}")
    return value if isinstance(value, float) or abs(value) < 2**63 else as_float


def _scalar(key: str, op: str, value: object) -> object:
    if type_name(value) in ("array", "object"):
        raise FilterError(f'filter key "{key}": {op} compares with a string, number, boolean or null, got '
                          f"{json.dumps(value)[:80]}; to match any of several values use {{\"$in\": [...]}}")
    return _number(key, op, value) if _is_number(value) else value


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise FilterError(f"filter keys are metadata keys: non-empty strings of at most {MAX_KEY_CHARS} characters")
    if any(c in key for c in '"\\') or CONTROL.search(key):
        raise FilterError(f"filter key {json.dumps(key)}: a key may not contain a double quote, a backslash or a "
                          "control character (NUL, newline, tab, …); rename the metadata key to filter on it")
    return key


def _operators(key: str, spec: Mapping) -> list[Condition]:
    if not spec:
        raise FilterError(f'filter key "{key}": an empty object is no condition; give a value or operators '
                          f"such as {{\"$in\": [...]}} (allowed: {', '.join(OPERATORS)})")
    out = []
    for op, arg in spec.items():
        if op not in OPERATORS:
            raise FilterError(f'filter key "{key}": unknown operator {json.dumps(op)[:60]}; allowed: '
                              f"{', '.join(OPERATORS)} (to match an object value, filter on a scalar key)")
        if op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise FilterError(f'filter key "{key}": {op} needs a list of values, got {json.dumps(arg)[:80]}')
            if len(arg) > MAX_LIST:
                raise FilterError(f'filter key "{key}": {op} takes at most {MAX_LIST} values, got {len(arg)}; store '
                                  "a coarser key to filter on, or split the search")
            out.append(Condition(key, op[1:], tuple(_scalar(key, op, v) for v in arg)))
        elif op in ("$eq", "$ne"):
            out.append(Condition(key, "in" if op == "$eq" else "nin", (_scalar(key, op, arg),)))
        elif op in RANGES:
            if not _is_number(arg):
                raise FilterError(f'filter key "{key}": {op} needs a number, got {json.dumps(arg)[:80]}')
            out.append(Condition(key, op, (_number(key, op, arg),)))
        elif not isinstance(arg, bool):
            raise FilterError(f'filter key "{key}": $exists needs true or false, got {json.dumps(arg)[:80]}')
        else:
            out.append(Condition(key, "exists", (arg,)))
    return out


def parse(raw: object) -> Filter:
    """The filter of a request body; FilterError says what to fix."""
    if not isinstance(raw, Mapping):
        raise FilterError('a filter is an object of metadata keys, e.g. {"lang": "en", "year": {"$gte": 2020}}')
    if len(raw) > MAX_KEYS:
        raise FilterError(f"a filter has at most {MAX_KEYS} keys; this one has {len(raw)}")
    conditions: list[Condition] = []
    for key, spec in raw.items():
        key = _check_key(key)
        if isinstance(spec, Mapping):
            conditions += _operators(key, spec)
        elif isinstance(spec, list):
            raise FilterError(f'filter key "{key}": a list is not a value to compare; to match any of several '
                              f'values use {{"{key}": {{"$in": {json.dumps(spec)[:60]}}}}}')
        else:
            conditions.append(Condition(key, "in", (_scalar(key, "a value", spec),)))
    return tuple(conditions)


# -- Python: the reference ------------------------------------------------------------------------------
def _same(a: object, b: object) -> bool:
    if _is_number(a) and _is_number(b):
        return a == b
    return type_name(a) == type_name(b) and type_name(a) in ("string", "boolean", "null") and a == b


_COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _holds(c: Condition, metadata: Mapping) -> bool:
    present = c.key in metadata
    if c.op == "exists":
        return present == c.values[0]
    value = metadata.get(c.key)
    elements = value if isinstance(value, list) else [value]
    hit = present and any(_same(e, v) for e in elements for v in c.values) if c.op in ("in", "nin") else False
    if c.op == "in":
        return hit
    if c.op == "nin":
        return not hit
    compare, bound = _COMPARE[c.op], c.values[0]
    return present and any(_is_number(e) and compare(e, bound) for e in elements)


def matches(metadata: Mapping, flt: Filter) -> bool:
    """Whether a document's metadata passes the filter."""
    return all(_holds(c, metadata) for c in flt)


# -- SQLite ---------------------------------------------------------------------------------------------
def _equals(t: str, v: str, values: tuple, args: list) -> str:
    """SQL: the JSON item with type `t` and value `v` (SQL expressions) equals one of `values`."""
    alternatives = []
    kinds = [("true" if x else "false") for x in values if isinstance(x, bool)]
    kinds += ["null"] if any(x is None for x in values) else []
    if kinds:
        alternatives.append(f"{t} IN ({','.join('?' * len(kinds))})")
        args += kinds
    for kind, sql_types in (("number", "('integer', 'real')"), ("string", "('text')")):
        group = [x for x in values if type_name(x) == kind]
        if group:  # one JSON array parameter per type: any number of values, one bound variable
            alternatives.append(f"({t} IN {sql_types} AND {v} IN (SELECT value FROM json_each(?)))")
            args.append(json.dumps(group, ensure_ascii=False))
    return "(" + (" OR ".join(alternatives) or "0") + ")"


def _in_range(t: str, v: str, op: str, bound: float, args: list) -> str:
    args.append(bound)
    return f"({t} IN ('integer', 'real') AND {v} {RANGES[op]} ?)"


def _condition(c: Condition, args: list) -> str:
    """SQL over a `metadata` JSON column, 0 or 1 (never NULL) for every row."""
    path = "'" + ('$."' + c.key + '"').replace("'", "''") + "'"  # keys hold no " or \\ (parse checks)
    kind = f"json_type(metadata, {path})"
    if c.op == "exists":
        return f"({kind} IS {'NOT ' if c.values[0] else ''}NULL)"

    def test(t: str, v: str) -> str:
        if c.op in ("in", "nin"):
            return _equals(t, v, c.values, args)
        return _in_range(t, v, c.op, c.values[0], args)

    scalar = test(kind, f"json_extract(metadata, {path})")
    element = test("e.type", "e.value")
    hit = (f"COALESCE({scalar} OR ({kind} = 'array' AND EXISTS (SELECT 1 FROM json_each(metadata, {path}) AS e "
           f"WHERE {element})), 0)")
    return f"(NOT {hit})" if c.op == "nin" else f"({hit})"


def sql(flt: Filter) -> tuple[str, list]:
    """A WHERE clause over a `metadata` JSON column and its bound values."""
    args: list = []
    clauses = [_condition(c, args) for c in flt]
    return (" AND ".join(clauses) or "1"), args


_JSON_TYPES = {"true": "boolean", "false": "boolean", "integer": "number", "real": "number", "text": "string",
               "null": "null", "object": "object", "array": "array"}


def sqlite_types(conn: sqlite3.Connection, table: str) -> dict[str, set[str]]:
    """Each top-level metadata key in `table` → the JSON types it holds (a list's element types too);
    the caller holds the connection's lock."""
    rows = conn.execute(f"SELECT DISTINCT j.key, j.type FROM {table}, json_each({table}.metadata) AS j "
                        f"UNION SELECT DISTINCT j.key, e.type FROM {table}, json_each({table}.metadata) AS j, "
                        "json_each(j.value) AS e WHERE j.type = 'array'").fetchall()
    out: dict[str, set[str]] = {}
    for key, kind in rows:
        out.setdefault(key, set()).add(_JSON_TYPES[kind])
    return out


def merge_types(*summaries: Mapping[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for summary in summaries:
        for key, kinds in summary.items():
            out.setdefault(key, set()).update(kinds)
    return out


def add_types(summary: dict[str, set[str]], metadata: Mapping) -> None:
    """Fold one document's metadata into a key → types summary."""
    for key, value in metadata.items():
        kinds = summary.setdefault(key, set())
        kinds.add(type_name(value))
        if isinstance(value, list):
            kinds.update(type_name(e) for e in value)


# -- warnings -------------------------------------------------------------------------------------------
def warnings(flt: Filter, types: Mapping[str, set[str]], collection: str) -> list[str]:
    """Sentences about keys no document has and values of a type no document has for their key: such a
    filter answers (usually with no hits) but most likely has a typo or a quoted number."""
    out: list[str] = []
    for key in dict.fromkeys(c.key for c in flt if c.op != "exists" or c.values[0]):
        if key not in types:
            known = ", ".join(sorted(types)[:20]) or "none"
            out.append(f'filter key "{key}": no document in collection "{collection}" has this key; keys in use: {known}')
    for c in flt:
        held = types.get(c.key)
        if not held or c.op == "exists":
            continue
        asked = ["number"] if c.op in RANGES else [type_name(v) for v in c.values]
        for kind in dict.fromkeys(asked):
            if kind not in held:
                have = ", ".join(sorted(held - {"array"}) or held)
                article = "an" if kind[0] in "aeiou" else "a"
                out.append(f'filter key "{c.key}": compared with {article} {kind}, but documents have {have} values here')
    return out
