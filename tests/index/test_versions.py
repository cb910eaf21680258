import json

import pytest

from whitevec.index.build import build_version
from whitevec.index.documents import check_documents, read_jsonl, resolve_import_path
from whitevec.index.spec import IndexSpec
from whitevec.index.store import Document
from whitevec.index.versions import VersionStore
from whitevec.models.errors import ModelFolderError, WhitevecError
from whitevec.models.whitening import WhiteningParams
from tests.conftest import demo_documents, make_tiny_bert


def docs() -> list[Document]:
    return [Document(d["id"], d["text"], d["metadata"]) for d in demo_documents()]


def test_build_commit_activate_load(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    assert store.active() is None
    result = build_version(store, tiny_encoder, docs(), WhiteningParams(1, 1, 8), IndexSpec("flat"))
    assert store.active() is None  # building never activates
    store.activate(result.version)
    assert store.active() == result.version
    manifest = store.manifest(result.version)
    assert manifest["model"]["fingerprint"] == tiny_encoder.identity.fingerprint
    assert manifest["index"]["count"] == 12 and manifest["whitening"]["output_dim"] == 8
    bundle = store.load(result.version, encoder=tiny_encoder)
    assert bundle.encoder is tiny_encoder  # same model: weights are not loaded twice
    assert bundle.store.get([0])[0].id == docs()[0].id
    assert bundle.store.get([11])[11].metadata == {"topic": "travel"}


def test_refuses_a_model_that_changed_since_the_build(tmp_path):
    from whitevec.models.encoder import Encoder

    folder = make_tiny_bert(tmp_path / "m")
    store = VersionStore(tmp_path / "data")
    version = build_version(store, Encoder(folder, device="cpu"), docs(), WhiteningParams(), IndexSpec()).version
    make_tiny_bert(folder, seed=7)  # weights replaced in place
    with pytest.raises(ModelFolderError, match="changed since version"):
        store.load(version)


def test_activate_refuses_incomplete_versions(tmp_path):
    store = VersionStore(tmp_path)
    version, tmp = store.new_version()
    with pytest.raises(WhitevecError, match="not complete"):
        store.activate(version)


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y", "metadata": [1]}\n')
    with pytest.raises(WhitevecError, match="d.jsonl:3: `metadata` must be a JSON object"):
        read_jsonl(path)
    path.write_text('{"id": "a", "text": "x"}\n{"id": 5, "text": "y"}\n')
    with pytest.raises(WhitevecError, match="d.jsonl:2: `id` must be a non-empty string"):
        read_jsonl(path)
    path.write_text(json.dumps({"id": "a", "text": "x"}) + "\n" + json.dumps({"id": "b", "text": "y"}) + "\n")
    assert [d.id for d in read_jsonl(path)] == ["a", "b"]


def test_document_checks():
    with pytest.raises(WhitevecError, match="more than|exceed the limit of 5"):
        check_documents(docs(), max_documents=5)
    check_documents(docs(), max_documents=100)


def test_import_paths(tmp_path):
    root = tmp_path / "import"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.jsonl").write_text("{}")
    assert resolve_import_path(root, "sub/ok.jsonl") == (root / "sub" / "ok.jsonl").resolve()
    for bad in ("../x", "/etc/passwd", "sub/../../x", "."):
        with pytest.raises(WhitevecError):
            resolve_import_path(root, bad)


def test_rank_deficient_corpus_with_gamma_lowers_dim_and_says_so(tmp_path, tiny_encoder):
    """12 documents in 32 dims at γ = 1: serving dim 32 would scale unseen query directions ~1000×."""
    store = VersionStore(tmp_path)
    result = build_version(store, tiny_encoder, docs(), WhiteningParams(1, 1, 32), IndexSpec("flat"))
    assert result.manifest["whitening"]["output_dim"] == 11
    assert any("lowered from 32 to 11" in w for w in result.manifest["warnings"])
    bundle = store.load(result.version, encoder=tiny_encoder)
    q = bundle.pipeline.postprocess(tiny_encoder.encode(["the cat sat on the mat"]).vectors)
    scores, _ = bundle.index.search(q, 3)
    assert scores[0, 0] > 0.9  # the query's own document is still found as itself


def test_small_corpora_are_built_flat_with_a_warning(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    result = build_version(store, tiny_encoder, docs(), WhiteningParams(), IndexSpec("ivf"))
    assert result.manifest["index"]["spec"] == {"type": "flat"}
    assert any("instead of ivf" in w for w in result.manifest["warnings"])
    kept = build_version(store, tiny_encoder, docs(), WhiteningParams(), IndexSpec("hnsw"), min_approx=2)
    assert kept.manifest["index"]["spec"]["type"] == "hnsw"
