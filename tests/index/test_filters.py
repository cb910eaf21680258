"""The filter language: SQLite (docs.sqlite and the change log) and the Python evaluator against a
brute-force reference written from the documented rules, on random metadata and random filters."""

import json
import random

import numpy as np
import pytest

from whitevec.index import filters
from whitevec.index.changes import CHANGES_FILE, ChangeLog
from whitevec.index.store import Document, DocumentStore

VALUES = [0, 1, 1.0, 2, 2.5, -3, True, False, None, "1", "a", "b", "it's", "é", ""]


def value(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.2:
        return [rng.choice(VALUES) for _ in range(rng.randrange(0, 4))] + ([[1]] if rng.random() < 0.1 else [])
    if roll < 0.25:
        return {"nested": rng.choice(VALUES)}
    return rng.choice(VALUES)


def documents(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{k: value(rng) for k in ("a", "b", "c", "it's") if rng.random() < 0.7} for _ in range(n)]


def kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    return {str: "str", type(None): "null"}.get(type(v), "other")


def equal(x: object, y: object) -> bool:
    return kind(x) == kind(y) != "other" and x == y


def reference(meta: dict, flt: dict) -> bool:
    """The documented rules, spelled out one by one."""
    for key, cond in flt.items():
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        present = key in meta
        items = meta[key] if present and isinstance(meta[key], list) else ([meta[key]] if present else [])
        for op, arg in ops.items():
            if op == "$eq":
                ok = any(equal(i, arg) for i in items)
            elif op == "$ne":
                ok = not any(equal(i, arg) for i in items)
            elif op == "$in":
                ok = any(equal(i, a) for i in items for a in arg)
            elif op == "$nin":
                ok = not any(equal(i, a) for i in items for a in arg)
            elif op == "$exists":
                ok = present == arg
            else:
                nums = [i for i in items if kind(i) == "num"]
                ok = any({"$gt": i > arg, "$gte": i >= arg, "$lt": i < arg, "$lte": i <= arg}[op] for i in nums)
            if not ok:
                return False
    return True


def random_filter(rng: random.Random) -> dict:
    out: dict = {}
    for key in rng.sample(["a", "b", "c", "it's", "zz"], rng.randrange(1, 3)):
        op = rng.choice(["value", "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "range"])
        scalar = rng.choice([v for v in VALUES if not isinstance(v, float) or v == 2.5])
        if op == "value":
            out[key] = scalar
        elif op in ("$in", "$nin"):
            out[key] = {op: rng.sample(VALUES, rng.randrange(0, 4))}
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            out[key] = {op: rng.choice([0, 1, 1.5, 2, -5])}
        elif op == "range":
            out[key] = {"$gte": rng.choice([0, 1]), "$lt": rng.choice([2, 3])}
        elif op == "$exists":
            out[key] = {"$exists": rng.random() < 0.5}
        else:
            out[key] = {op: scalar}
    return out


def test_sqlite_and_python_equal_the_reference(tmp_path):
    metas = documents(600, seed=0)
    DocumentStore.write(tmp_path / "docs.sqlite", [Document(f"d{i}", "t", m) for i, m in enumerate(metas)])
    store = DocumentStore(tmp_path / "docs.sqlite")
    log = ChangeLog(tmp_path / CHANGES_FILE, len(metas), 2)
    added = documents(200, seed=1)
    keys = log.apply([Document(f"n{i}", "t", m) for i, m in enumerate(added)], np.zeros((len(added), 2)), [], [], [])
    rng = random.Random(2)
    seen_nonempty = 0
    for _ in range(400):
        raw = random_filter(rng)
        flt = filters.parse(json.loads(json.dumps(raw)))
        want = [i for i, m in enumerate(metas) if reference(m, raw)]
        assert store.match(flt).tolist() == want, raw
        assert [i for i, m in enumerate(metas) if filters.matches(m, flt)] == want, raw
        want_added = [int(k) for k, m in zip(keys, added) if reference(m, raw)]
        assert sorted(log.match(flt).tolist()) == want_added, raw
        seen_nonempty += 0 < len(want) < len(metas)
    assert seen_nonempty > 100  # the random filters are selective, not all-or-nothing
    store.close()
    log.close()


def test_numbers_beyond_64_bits_compare_as_sqlite_reads_them(tmp_path):
    big = 2**70
    DocumentStore.write(tmp_path / "docs.sqlite", [Document("a", "t", {"n": big}), Document("b", "t", {"n": 5})])
    store = DocumentStore(tmp_path / "docs.sqlite")
    assert store.match(filters.parse({"n": {"$gt": 2**64}})).tolist() == [0]
    assert store.match(filters.parse({"n": {"$lt": big}})).tolist() == [1]
    assert store.match(filters.parse({"n": big})).tolist() == [0]
    store.close()


def test_list_values_match_any_element_and_objects_never_equal():
    flt = filters.parse({"tags": "faq"})
    assert filters.matches({"tags": ["billing", "faq"]}, flt)
    assert not filters.matches({"tags": [["faq"]]}, flt) and not filters.matches({"tags": {"faq": 1}}, flt)
    assert filters.matches({"n": [1, 7]}, filters.parse({"n": {"$gt": 5}}))
    assert not filters.matches({"n": [True, "9"]}, filters.parse({"n": {"$gt": 0}}))  # booleans are not numbers
    assert filters.matches({}, filters.parse({"n": {"$ne": 1}})) and not filters.matches({}, filters.parse({"n": 1}))
    assert filters.matches({"n": None}, filters.parse({"n": {"$exists": True}}))


@pytest.mark.parametrize("raw,said", [
    ({"year": {"$gt": "2020"}}, 'filter key "year": $gt needs a number, got "2020"'),
    ({"year": {"$foo": 1}}, 'filter key "year": unknown operator "$foo"; allowed: $eq, $ne, $in, $nin'),
    ({"year": [2020, 2021]}, 'to match any of several values use {"year": {"$in": [2020, 2021]}}'),
    ({"year": {"$in": 2020}}, 'filter key "year": $in needs a list of values, got 2020'),
    ({"year": {}}, 'filter key "year": an empty object is no condition'),
    ({"year": {"$exists": 1}}, "$exists needs true or false"),
    ({"year": {"$eq": {"a": 1}}}, "$eq compares with a string, number, boolean or null"),
    ({'ye"ar': 1}, "may not contain a double quote"),
    ({"": 1}, "non-empty strings"),
    ({f"k{i}": 1 for i in range(33)}, "at most 32 keys"),
    ({"k": {"$in": list(range(1025))}}, "$in takes at most 1024 values"),
    ({"k": {"$gt": 10**400}}, '"k": $gt needs a finite number of at most about 1e308'),
    ({"k": {"$in": [1, -(10**400)]}}, "$in needs a finite number"),
])
def test_bad_filters_say_what_to_fix(raw, said):
    with pytest.raises(filters.FilterError) as err:
        filters.parse(raw)
    assert said in str(err.value)


def test_warnings_name_unknown_keys_and_types_no_document_has():
    types = {"year": {"number"}, "tags": {"array", "string"}, "lang": {"string", "null"}}
    said = filters.warnings(filters.parse({"yaer": 2020, "year": "2020", "tags": "faq", "lang": {"$exists": True},
                                           "missing": {"$exists": False}}), types, "faq")
    assert said == ['filter key "yaer": no document in collection "faq" has this key; keys in use: lang, tags, year',
                    'filter key "year": compared with a string, but documents have number values here']
    assert filters.warnings(filters.parse({"tags": {"$gte": 1}}), types, "faq") == [
        'filter key "tags": compared with a number, but documents have string values here']
    assert filters.warnings(filters.parse({"year": {"$in": [2020, 2021]}}), types, "faq") == []
    assert filters.warnings(filters.parse({"yr": {"$exists": True}}), types, "faq")[0].startswith('filter key "yr": no')
