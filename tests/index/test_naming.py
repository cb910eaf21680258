"""The one table of name rules: each kind's rule as users meet it, and every caller going through it."""

from __future__ import annotations

import pytest

from whitevec.index import layout, naming
from whitevec.index.parts import VersionDamaged
from whitevec.index.versions import VersionStore
from whitevec.service.engine.collection import resolve_model_choice
from whitevec.service.engine.errors import NotFound

HOSTILE = ["", ".", "..", "../etc", "a/b", "x\x00", "\ud800", " ", "\n", "a" * 20_000]


@pytest.mark.parametrize("kind", list(naming.RULES))
def test_hostile_names_are_refused_with_the_rule_and_the_field(kind):
    for bad in HOSTILE:
        with pytest.raises(naming.BadName) as err:
            naming.check(kind, bad)
        assert err.value.param == naming.RULES[kind].param and naming.RULES[kind].rule in str(err.value)
        assert len(str(err.value)) < 400  # a 20,000-character name is not echoed back
        assert not naming.valid(kind, bad)
    assert not naming.valid(kind, None) and not naming.valid(kind, 7)


def test_each_kind_allows_what_its_writers_make():
    assert naming.check("collection", "faq-2_x") == "faq-2_x"
    for bad in ("Faq", "-x", "a" * 64, "a.b", "ü", "faq\n"):
        assert not naming.valid("collection", bad), bad
    assert naming.valid("version", "20261205T180500.123456-ab12")  # as VersionStore.new_version makes them
    assert not naming.valid("version", "v1\n") and not naming.valid("version", "a" * 101)
    # fine-tunes are named after their base model; folders copied in by hand may hold spaces and dots
    for good in ("all-MiniLM-L6-v2-ft-20261205T180500-ab12", "my model v1.2", "模型", "a" * 200):
        assert naming.valid("model", good), good
    for bad in (".hidden", "a" * 201, "\t\n"):
        assert not naming.valid("model", bad), bad


def test_every_writer_of_a_name_goes_through_the_table(tmp_path):
    with pytest.raises(naming.BadName):
        layout.folder(tmp_path, "../x")
    store = VersionStore(tmp_path / "collections" / "default")
    with pytest.raises(VersionDamaged, match="not a version name"):
        store.folder("../../etc")
    with pytest.raises(naming.BadName) as err:
        resolve_model_choice(tmp_path, "../etc")
    assert err.value.param == "model"
    with pytest.raises(NotFound):  # a good name of a folder that is not there
        resolve_model_choice(tmp_path, "nope")
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    assert resolve_model_choice(tmp_path, "mine") == "mine" and resolve_model_choice(tmp_path, None) is None
    (tmp_path / "collections" / "Bad.Name").mkdir(parents=True)
    (tmp_path / "collections" / "good").mkdir()
    assert layout.names(tmp_path) == ["default", "good"]  # folders outside the rule are passed over, never served
