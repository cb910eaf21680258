"""The Ray rebuild path (`whitevec index build FILE --ray ADDRESS`, issue 11) builds the same Milvus
collection as the in-process path: same documents, same raw vectors, same whitening, same answers."""

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.service.test_corpus import corpus

pytest.importorskip("ray.data")


pytestmark = pytest.mark.ray


def cli_build(jsonl, data_dir, model_dir, *extra: str) -> dict:
    env = {**os.environ, "WHITEVEC_INDEX_BACKEND": "milvus", "WHITEVEC_DEVICE": "cpu", "WHITEVEC_ENGINE": "torch"}
    done = subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "index", "build", str(jsonl), "--data-dir",
                           str(data_dir), "--model", str(model_dir), "--dim", "16", "--beta", "1", "--gamma", "1",
                           *extra], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


def load(data_dir):
    from pymilvus import MilvusClient

    from whitevec.index.milvus_target import MilvusTarget
    from whitevec.index.versions import VersionStore

    client = MilvusClient(str(data_dir / "milvus.db"))
    store = VersionStore(data_dir / "collections" / "default", MilvusTarget(client, "whitevec", "default"))
    bundle = store.load(store.active(), device="cpu", engine="torch")
    return client, bundle


def test_the_ray_build_writes_the_same_collection_as_the_in_process_build(tmp_path, tiny_model_dir):
    docs = corpus(90)
    docs.insert(5, {"id": "ü 7 ☃", "text": "an id with spaces and non-ASCII letters"})
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d) for d in docs) + "\n\n", encoding="utf-8")  # a blank line too
    local = cli_build(jsonl, tmp_path / "local", tiny_model_dir)
    ray = cli_build(jsonl, tmp_path / "ray", tiny_model_dir, "--ray", "local", "--ray-workers", "2")
    assert local["documents"] == ray["documents"] == len(docs)

    (c1, b1), (c2, b2) = load(tmp_path / "local"), load(tmp_path / "ray")
    try:
        docs1, raw1 = b1.retriever.documents()
        docs2, raw2 = b2.retriever.documents()
        order1, order2 = np.argsort([d.id for d in docs1]), np.argsort([d.id for d in docs2])
        assert [docs1[i] for i in order1] == [docs2[i] for i in order2]  # ids, texts, metadata
        np.testing.assert_allclose(raw1[order1], raw2[order2], atol=1e-5)
        w1, w2 = b1.pipeline.whitening, b2.pipeline.whitening
        t1, t2 = w1.transform(raw1), w2.transform(raw1)  # equal up to the signs of the SVD's axes
        np.testing.assert_allclose(t1 @ t1.T, t2 @ t2.T, rtol=1e-3, atol=1e-3)
        queries = b1.pipeline.postprocess(b1.encoder.encode(["heavy rain in the city", "a cat on a mat"]).vectors)
        found = [asyncio.run(b.retriever.search(queries, 10, b.retriever.search_params(None, None, 64, 512)))
                 for b in (b1, b2)]
        assert [[h.document.id for h in hits] for hits in found[0]] == [[h.document.id for h in hits]
                                                                        for hits in found[1]]
    finally:
        c1.close()
        c2.close()


def test_an_unreachable_ray_cluster_is_one_clear_error_and_builds_nothing(tmp_path, tiny_model_dir):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps(d) for d in corpus(5)) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(WHITEVEC_INDEX_BACKEND="milvus", WHITEVEC_DEVICE="cpu", WHITEVEC_ENGINE="torch")
    done = subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "index", "build", str(jsonl), "--data-dir",
                           str(tmp_path / "data"), "--model", str(tiny_model_dir), "--dim", "16", "--ray", "auto"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "could not start or reach Ray at 'auto'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "data").rglob("manifest.json"))  # no version was written
