"""Backups go through the version store: the versions they copy are pinned against prune, the copied
pointer names a version the copy has, and a version discarded meanwhile leaves the rest of the copy whole."""

import json

from whitevec.index import backup as backup_module
from whitevec.index import layout
from whitevec.index.backup import backup
from whitevec.index.build import build_version
from whitevec.index.spec import IndexSpec
from whitevec.index.store import Document
from whitevec.index.versions import VersionStore
from whitevec.models.whitening import WhiteningParams

from tests.conftest import demo_documents


def docs(n: int = 1) -> list[Document]:
    return [Document(d["id"], d["text"], d["metadata"]) for d in demo_documents(n)]


def store_with_versions(data_dir, encoder, n: int) -> tuple[VersionStore, list[str]]:
    layout.create(data_dir, "a", {})
    store = VersionStore(layout.folder(data_dir, "a"))
    made = []
    for _ in range(n):
        made.append(build_version(store, encoder, docs(), WhiteningParams(1, 1, 8), IndexSpec("flat")).version)
        store.activate(made[-1])
    return store, made


def during_copy(monkeypatch, action) -> None:
    """Run `action()` once, after the backup copied its first version file (a deterministic race)."""
    original = backup_module._Copier.file
    done: list[bool] = []

    def file(self, src, dst):
        original(self, src, dst)
        if not done and "versions" in src.parts and src.name == "manifest.json":
            done.append(True)
            action()

    monkeypatch.setattr(backup_module._Copier, "file", file)


def test_a_prune_during_a_backup_takes_nothing_the_backup_copies(tmp_path, tiny_encoder, monkeypatch):
    data = tmp_path / "data"
    store, made = store_with_versions(data, tiny_encoder, 3)
    pruned: list[str] = []
    during_copy(monkeypatch, lambda: pruned.extend(store.prune(keep=1)))
    counts = backup(data, tmp_path / "copy")
    assert pruned == []  # every version was pinned while it was copied
    copy = VersionStore(layout.folder(tmp_path / "copy", "a"))
    assert copy.versions() == made and copy.active() == made[-1]
    for version in made:
        copy.verify_files(version)  # whole, checksums and all
    assert counts["files"] > 0 and not list(store.root.glob(".pin-*"))  # the pin went with the backup
    assert store.prune(keep=2) == [made[0]]  # once the backup is done, prune works as before


def test_a_version_discarded_during_a_backup_leaves_the_rest_of_the_copy(tmp_path, tiny_encoder, monkeypatch):
    data = tmp_path / "data"
    store, made = store_with_versions(data, tiny_encoder, 2)
    stray = build_version(store, tiny_encoder, docs(), WhiteningParams(), IndexSpec("flat")).version  # never served
    during_copy(monkeypatch, lambda: store.discard(stray))
    backup(data, tmp_path / "copy")
    copy = VersionStore(layout.folder(tmp_path / "copy", "a"))
    assert stray not in copy.versions() and copy.versions() == made and copy.active() == made[-1]
    assert json.loads((copy.root / "ACTIVE").read_text())["version"] == made[-1]
    assert (layout.folder(tmp_path / "copy", "a") / layout.CONFIG).is_file()


def test_a_pin_left_by_a_dead_backup_is_removed_by_the_next_prune(tmp_path, tiny_encoder):
    data = tmp_path / "data"
    store, made = store_with_versions(data, tiny_encoder, 3)
    (store.root / ".pin-dead").write_text(json.dumps(made))  # no process holds its lock
    assert store.prune(keep=1) == [made[0]] and not (store.root / ".pin-dead").exists()
