"""Every public SDK method as a user's code calls it, type-checked by test_typing.py (never run).

`assert_type` pins what an IDE shows for each answer; each `# type: ignore[code]` marks a mistake the
annotations must catch (mypy --strict reports an ignore that is no longer needed)."""

from __future__ import annotations

from typing import Any, Dict, List, Union

import numpy as np
from numpy.typing import NDArray
from typing_extensions import assert_type

from whitevec_client import (Activated, AsyncClient, AsyncCollection, Client, Collection, CollectionDeleted, Deleted,
                             Document, Hit, Hits, InvalidRequest, Job, KeyRevoked, StoredDocument, TrainJob, Upserted,
                             ValidationError, VersionList)

DOCS: List[Document] = [{"id": "a", "text": "the cat sat", "metadata": {"lang": "en"}}, {"id": "b", "text": "rain"}]


def sync_example(wv: Client) -> None:
    assert_type(wv.embed(["hello"]), List[List[float]])
    assert_type(wv.embed(["hello"], dim=64, whiten=False, normalize=False, as_numpy=False), List[List[float]])
    assert_type(wv.embed(["hello"], as_numpy=True), NDArray[np.float32])
    assert_type(wv.embed(["hello"], as_numpy=bool(DOCS)), Union[List[List[float]], NDArray[np.float32]])
    hits = wv.search("will it rain?", k=3, filter={"lang": "en", "year": {"$gte": 2020}}, nprobe=8, ef_search=64)
    assert_type(hits, Hits)
    assert_type(hits[0], Hit)
    assert_type(hits.warnings, List[str])
    assert_type(hits.version, str)
    assert_type(hits[0].score, float)
    assert_type(wv.search_many(["rain", "flights"], k=2), List[Hits])
    assert_type(wv.search(["rain", "flights"]), List[Hits])  # the older form
    job = wv.rebuild_index(documents=DOCS, whitening={"beta": 1, "gamma": 0.5, "dim": 256},
                           index={"type": "hnsw", "m": 32, "ef_search": 64}, mode="merge", confirm_shrink=False)
    assert_type(wv.wait(job, timeout=60, progress=False, poll=0.2), Job)
    assert_type(wv.rebuild_index(reencode=False, whitening={"auto": {"pairs": "sts.tsv", "tolerance": 0.5}}), Job)
    assert_type(wv.upsert(DOCS), Upserted)
    assert_type(wv.delete(["a"])["missing"], List[str])
    assert_type(wv.get_document("a"), StoredDocument)
    versions = wv.versions()
    assert_type(versions, VersionList)
    assert_type(wv.activate(str(versions["versions"][1]["version"])), Activated)

    faq = wv.collection("faq")
    assert_type(faq, Collection)
    assert_type(faq.search("refund"), Hits)
    assert_type(faq.embed(["refund"], as_numpy=True), NDArray[np.float32])
    assert_type(faq.upsert([{"id": "c", "text": "refunds take a week"}])["upserted"], int)

    made: Dict[str, Any] = wv.create_collection("faq", model="bundled", whitening={"dim": 128}, index={"type": "flat"})
    assert_type(made, Dict[str, Any])
    assert_type(wv.get_collection("faq"), Dict[str, Any])
    assert_type(wv.collections(), List[Dict[str, Any]])
    assert_type(wv.delete_collection("faq", confirm=True), CollectionDeleted)
    key = wv.create_key(["faq"], "write", name="website")
    assert_type(wv.keys(), List[Dict[str, Any]])
    assert_type(wv.revoke_key(str(key["id"])), KeyRevoked)

    trained = wv.train(examples=[{"text": "reset my password", "label": "pw"}, {"text": "track it", "label": 2}],
                       epochs=1, batch_size=8, lr=2e-5, centre_lr=1e-2, warmup=0.1, grad_accum=1, max_length=64,
                       seed=0, max_steps=10, scale=30.0, margin=0.35, activate=True, name="faq-tuned",
                       collection="faq", whitening="auto", eval_path="pairs.tsv")
    assert_type(trained, TrainJob)
    assert_type(trained.warnings, List[str])
    assert_type(wv.train(pairs=[{"text_a": "a", "text_b": "b", "score": 4.5}], pair_threshold=4.0), TrainJob)
    assert_type(wv.train(path="train.tsv"), TrainJob)
    assert_type(wv.job(trained.id), Job)
    assert_type(wv.jobs(collection="faq"), List[Job])
    assert_type(wv.cancel(trained.id), Job)
    assert_type(wv.job_plot(trained.id), bytes)
    assert_type(wv.health(), Dict[str, Any])
    assert_type(wv.ready(), Dict[str, Any])
    assert_type(wv.metrics(), str)
    wv.close()

    # mistakes the annotations catch
    wv.train(epochs="3")  # type: ignore[arg-type]
    wv.train("train.tsv")  # type: ignore[call-arg, arg-type]  # keyword arguments only
    wv.rebuild_index(DOCS, mode="append")  # type: ignore[arg-type]
    wv.rebuild_index(DOCS, whitening={"betta": 1})  # type: ignore[arg-type]
    wv.create_key(["faq"], "admin")  # type: ignore[arg-type]
    wv.upsert([{"id": "x"}])  # type: ignore[typeddict-item]
    hits.warnings.append(1)  # type: ignore[arg-type]
    try:
        wv.search("x")
    except ValidationError as old:  # the deprecated name still type-checks, as the same class
        assert_type(old, InvalidRequest)


async def async_example(wv: AsyncClient) -> None:
    async with wv:
        assert_type(await wv.embed(["hello"]), List[List[float]])
        assert_type(await wv.embed(["hello"], as_numpy=True), NDArray[np.float32])
        assert_type(await wv.search("rain", filter={"lang": "en"}, nprobe=4, ef_search=32), Hits)
        assert_type(await wv.search_many(["rain", "flights"]), List[Hits])
        job = await wv.rebuild_index(path="corpus.jsonl", mode="replace", confirm_shrink=True)
        assert_type(await wv.wait(job), Job)
        assert_type(await wv.upsert(DOCS), Upserted)
        assert_type(await wv.delete(["a"]), Deleted)
        assert_type(await wv.get_document("a"), StoredDocument)
        assert_type(await wv.versions(), VersionList)
        assert_type(await wv.activate("v1"), Activated)
        faq = wv.collection("faq")
        assert_type(faq, AsyncCollection)
        assert_type(await faq.search_many(["refund"]), List[Hits])
        assert_type(await faq.rebuild_index(documents=DOCS), Job)
        assert_type(await wv.create_collection("faq"), Dict[str, Any])
        assert_type(await wv.get_collection("faq"), Dict[str, Any])
        assert_type(await wv.collections(), List[Dict[str, Any]])
        assert_type(await wv.delete_collection("faq", confirm=True), CollectionDeleted)
        assert_type(await wv.create_key(["faq"]), Dict[str, Any])
        assert_type(await wv.keys(), List[Dict[str, Any]])
        assert_type(await wv.revoke_key("k1"), KeyRevoked)
        trained = await wv.train(path="train.tsv", epochs=1, activate=True)
        assert_type(trained, TrainJob)
        assert_type(await wv.job(trained.id), Job)
        assert_type(await wv.jobs(), List[Job])
        assert_type(await wv.cancel(trained.id), Job)
        assert_type(await wv.job_plot(trained.id), bytes)
        assert_type(await wv.health(), Dict[str, Any])
        assert_type(await wv.ready(), Dict[str, Any])
        assert_type(await wv.metrics(), str)
        await wv.train(epochs=1.5)  # type: ignore[arg-type]
    await wv.close()
