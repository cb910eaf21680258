"""Access keys: tenants reach their own collections only; 404 for the rest; revocation is immediate."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.conftest import ADMIN, demo_documents, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def two_collections(client) -> None:
    await rebuild(client, {"documents": demo_documents(2)})
    for name in ("a", "b"):
        assert (await client.put(f"/admin/collections/{name}", json={}, headers=ADMIN)).status_code == 201
        r = await client.post(f"/admin/collections/{name}/rebuild", headers=ADMIN, json={
            "documents": [dict(d, id=f"{name}-{d['id']}") for d in demo_documents(2)]})
        assert r.status_code == 202, r.text
        assert (await wait_job(client, r.json()["job_id"]))["state"] == "succeeded"


async def make_key(client, collections: list[str], access: str, name: str | None = None) -> dict:
    r = await client.post("/admin/keys", json={"collections": collections, "access": access, "name": name},
                          headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_key_reaches_its_collections_only(settings):
    async with serving(settings) as (app, client):
        await two_collections(client)
        assert (await client.post("/collections/b/search", json={"query": "x"})).status_code == 200  # open: no keys
        read = await make_key(client, ["a"], "read", "site a")
        write = await make_key(client, ["a"], "write")
        assert read["key"].startswith("wvk_") and read["key"] != write["key"]

        # once a key exists, data routes need a credential
        r = await client.post("/collections/a/search", json={"query": "x"})
        assert r.status_code == 401 and "access key" in r.json()["error"]["message"]
        for key in (read, write):
            h = bearer(key["key"])
            r = await client.post("/collections/a/search", json={"query": "rain", "k": 3}, headers=h)
            assert r.status_code == 200 and all(x["id"].startswith("a-") for x in r.json()["results"][0]["hits"])
            assert (await client.post("/collections/a/embed", json={"texts": ["x"]}, headers=h)).status_code == 200
            # the other collection, and default, are 404 exactly as a collection that does not exist
            for path in ("/collections/b/search", "/collections/nope/search", "/search"):
                r = await client.post(path, json={"query": "x"}, headers=h)
                assert r.status_code == 404, (path, r.text)
                assert "no collection named" in r.json()["error"]["message"]
                assert "GET /admin/collections" not in r.json()["error"]["message"]
            assert (await client.post("/collections/b/embed", json={"texts": ["x"]}, headers=h)).status_code == 404
            assert (await client.get("/admin/collections/b/documents/b-rain-0-0", headers=h)).status_code == 404
            assert (await client.get("/admin/collections/b/versions", headers=h)).status_code == 404
            assert (await client.post("/admin/collections/b/documents", headers=h,
                                      json={"documents": [{"id": "x", "text": "x"}]})).status_code == 404
            # admin-only routes: 403 for its own collection, never a listing
            assert (await client.get("/admin/collections/a/versions", headers=h)).status_code == 403
            assert (await client.get("/admin/collections", headers=h)).status_code == 403
            assert (await client.get("/admin/keys", headers=h)).status_code == 403
            r = await client.post("/v1/embeddings", json={"input": "x", "model": "b"}, headers=h)
            assert r.status_code == 404
            assert (await client.post("/v1/embeddings", json={"input": "x", "model": "a"}, headers=h)).status_code == 200
            assert {m["id"] for m in (await client.get("/v1/models", headers=h)).json()["data"]} == {"a"}

        # read may not touch documents; write may, in its collection
        doc = {"documents": [{"id": "a-new", "text": "a new document"}]}
        r = await client.post("/admin/collections/a/documents", json=doc, headers=bearer(read["key"]))
        assert r.status_code == 403 and "write" in r.json()["error"]["message"]
        r = await client.post("/admin/collections/a/documents", json=doc, headers=bearer(write["key"]))
        assert r.status_code == 200 and r.json()["upserted"] == 1
        r = await client.get("/admin/collections/a/documents/a-new", headers=bearer(write["key"]))
        assert r.status_code == 200 and r.json()["text"] == "a new document"
        r = await client.post("/admin/collections/a/documents/delete", json={"ids": ["a-new"]},
                              headers=bearer(write["key"]))
        assert r.json()["deleted"] == 1

        # listing shows scopes and use, never keys or digests
        keys = (await client.get("/admin/keys", headers=ADMIN)).json()["keys"]
        assert [k["id"] for k in keys] == [read["id"], write["id"]]
        assert keys[0]["name"] == "site a" and keys[0]["collections"] == ["a"] and keys[0]["access"] == "read"
        assert keys[0]["last_used_at"].endswith("Z") and keys[0]["created_at"].endswith("Z")  # ISO 8601, UTC
        assert datetime.fromisoformat(keys[0]["created_at"]) <= datetime.fromisoformat(keys[0]["last_used_at"])
        text = str(keys)
        assert read["key"] not in text and write["key"] not in text and "digest" not in text
        stored = (settings.data_dir / "keys.sqlite").read_bytes()
        assert read["key"].encode() not in stored  # only the SHA-256 is kept
        import hashlib

        assert hashlib.sha256(read["key"].encode()).hexdigest().encode() in stored

        # revocation holds at once
        assert (await client.delete(f"/admin/keys/{read['id']}", headers=ADMIN)).json() == {"revoked": read["id"]}
        r = await client.post("/collections/a/search", json={"query": "x"}, headers=bearer(read["key"]))
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"  # a revoked key is no credential: 401, as for none
        assert (await client.delete(f"/admin/keys/{read['id']}", headers=ADMIN)).status_code == 404

        # a near miss of a real key is refused the same way
        forged = write["key"][:-1] + ("A" if write["key"][-1] != "A" else "B")
        assert (await client.post("/collections/a/search", json={"query": "x"}, headers=bearer(forged))).status_code == 401
        for odd in ("wvk_", "wvk__", "wvk_x_y", "\udcff", "x" * 5000):
            header = ("Bearer " + odd).encode("utf-8", "surrogateescape")  # a lone surrogate: a raw 0xff byte
            r = await client.post("/collections/a/search", json={"query": "x"}, headers={"Authorization": header})
            assert r.status_code == 401, (odd[:10], r.status_code)

        # the admin token reaches everything; failures are counted
        assert (await client.post("/collections/b/search", json={"query": "x"}, headers=ADMIN)).status_code == 200
        anonymous = (await client.get("/readyz")).json()  # no names, versions or counts for whoever asks
        assert set(anonymous) == {"status", "limits", "detail"} and anonymous["status"] == "ready"
        elsewhere = (await client.get("/readyz", headers=bearer(write["key"]))).json()  # a key for a and b only
        assert set(elsewhere) == {"status", "limits", "detail"}
        assert set((await client.get("/readyz", headers=ADMIN)).json()["collections"]) == {"default", "a", "b"}
        assert set((await client.get("/readyz", headers={"Authorization": f"bearer {ADMIN['Authorization'][7:]}"})
                    ).json()["collections"]) == {"default", "a", "b"}
        assert (await client.get("/metrics")).status_code == 401  # it names every collection: operators only
        assert (await client.get("/metrics", headers=bearer(write["key"]))).status_code == 403
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert 'whitevec_index_vectors{collection="a"}' in metrics
        assert 'whitevec_auth_failures_total{reason="out_of_scope"}' in metrics
        assert 'whitevec_auth_failures_total{reason="wrong"}' in metrics
        assert read["key"] not in metrics

        # a deleted collection leaves the keys' scope: recreated under its name, it is not theirs
        assert (await client.delete("/admin/collections/a?confirm=true", headers=ADMIN)).status_code == 200
        assert (await client.put("/admin/collections/a", json={}, headers=ADMIN)).status_code == 201
        r = await client.post("/collections/a/embed", json={"texts": ["x"]}, headers=bearer(write["key"]))
        assert r.status_code == 404
        r = await client.post("/admin/keys", json={"collections": ["nope"], "access": "read"}, headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["param"] == "collections"


async def test_the_api_key_reads_every_collection_and_keys_survive_a_restart(settings):
    from pydantic import SecretStr

    settings = settings.model_copy(update={"api_key": SecretStr("the-api-key")})
    async with serving(settings) as (app, client):
        await two_collections(client)
        key = await make_key(client, ["b"], "read")
        api = bearer("the-api-key")
        for path in ("/search", "/collections/a/search", "/collections/b/search"):
            assert (await client.post(path, json={"query": "x"}, headers=api)).status_code == 200
        r = await client.post("/admin/collections/a/documents", json={"documents": [{"id": "x", "text": "x"}]},
                              headers=api)
        assert r.status_code == 403  # the API key reads; it never writes
        assert (await client.get("/admin/collections", headers=api)).status_code == 403
        r = await client.post("/search", json={"query": "x"}, headers=bearer("wrong"))
        assert r.status_code == 401
    async with serving(settings) as (app, client):
        r = await client.post("/collections/b/search", json={"query": "x"}, headers=bearer(key["key"]))
        assert r.status_code == 200
        assert (await client.post("/collections/a/search", json={"query": "x"},
                                  headers=bearer(key["key"]))).status_code == 404


@pytest.mark.milvus
async def test_keys_and_collections_on_milvus_and_across_two_replicas(settings, tmp_path, milvus_server):
    """Two replicas on one Milvus, one bundle dir and one jobs database: a collection, a key and a
    revocation made on one hold on the other within the poll interval; each collection has its own
    Milvus collections (whitevec_<collection>_<version>) and alias; deleting one drops them."""
    import asyncio

    from pymilvus import MilvusClient

    shared = {"index_backend": "milvus", "milvus_uri": milvus_server, "bundle_dir": tmp_path / "bundles",
              "jobs_db": str(tmp_path / "jobs.sqlite"), "alias_poll_s": 0.2}
    a_settings = settings.model_copy(update={**shared, "data_dir": tmp_path / "a", "replica_name": "a"})
    b_settings = settings.model_copy(update={**shared, "data_dir": tmp_path / "b", "replica_name": "b"})
    milvus = MilvusClient(milvus_server)

    async def eventually(check, timeout: float = 20):
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)

    async with serving(a_settings) as (app_a, a), serving(b_settings) as (app_b, b):
        await two_collections(a)
        names = milvus.list_collections()
        assert any(n.startswith("whitevec_a_") for n in names) and any(n.startswith("whitevec_b_") for n in names)
        assert milvus.describe_alias("whitevec_a")["collection_name"].startswith("whitevec_a_")
        key = await make_key(a, ["a"], "read")
        h = bearer(key["key"])

        async def b_serves_a_to_the_key_only() -> bool:
            r = await b.post("/collections/a/search", json={"query": "rain", "k": 3}, headers=h)
            other = await b.post("/collections/b/search", json={"query": "x"}, headers=h)
            return (r.status_code == 200 and r.json()["results"][0]["hits"][0]["id"].startswith("a-")
                    and other.status_code == 404)
        await eventually(b_serves_a_to_the_key_only)  # the collection, its version and the key reached b

        # a write through b lands in the version a activated, and a sees it
        r = await b.post("/admin/collections/a/documents", headers=ADMIN,
                         json={"documents": [{"id": "a-from-b", "text": "written on replica b"}]})
        assert r.status_code == 200
        assert (await a.get("/admin/collections/a/documents/a-from-b", headers=ADMIN)).status_code == 200

        await a.delete(f"/admin/keys/{key['id']}", headers=ADMIN)

        async def b_refuses() -> bool:
            r = await b.post("/collections/a/search", json={"query": "x"}, headers=h)
            return r.status_code == 401
        await eventually(b_refuses)

        r = await a.delete("/admin/collections/b?confirm=true", headers=ADMIN)
        assert r.status_code == 200 and r.json()["documents"] > 0
        assert not any(n.startswith("whitevec_b_") for n in milvus.list_collections())
        assert "whitevec_b" not in milvus.list_aliases().get("aliases", [])

        async def b_forgets() -> bool:
            return (await b.post("/collections/b/search", json={"query": "x"}, headers=ADMIN)).status_code == 404
        await eventually(b_forgets)
        # the last key revoked: the replicas stay closed to callers without a credential
        for replica in (a, b):
            assert (await replica.post("/collections/a/search", json={"query": "x"})).status_code == 401


@pytest.mark.parametrize("read_access", ["auto", "open", "keys"])
async def test_the_read_access_rule_is_explicit_and_said(settings, read_access):
    """WHITEVEC_READ_ACCESS: `auto` (the default: open until the first key, then credentials, and revoking
    does not reopen), `open` (always: keys scope writes), `keys` (always a credential). The key's creation
    answer says what it changed; /readyz shows the admin the rule in force."""
    settings = settings.model_copy(update={"read_access": read_access})
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents(2)})

        async def anonymous() -> int:
            return (await client.post("/search", json={"query": "x"})).status_code

        before = (await client.get("/readyz", headers=ADMIN)).json()["read_access"]
        assert before["setting"] == read_access and before["open"] == (read_access != "keys")
        assert await anonymous() == (401 if read_access == "keys" else 200)
        made = await make_key(client, ["default"], "write")
        said = made["read_access"]
        if read_access == "auto":
            assert not said["open"] and said["changed"].startswith("searching and embedding were open to anyone and "
                                                                   "now need a credential")
        else:  # the read rule did not move; what a first key always changes is said
            assert said["open"] == (read_access == "open")
            assert said["changed"].startswith("/metrics and /readyz now name collections to the admin token only")
        assert await anonymous() == (200 if read_access == "open" else 401)
        assert (await client.delete(f"/admin/keys/{made['id']}", headers=ADMIN)).status_code == 200
        assert await anonymous() == (200 if read_access == "open" else 401)  # a revoke reopens nothing
        after = (await client.get("/readyz", headers=ADMIN)).json()["read_access"]
        assert after["open"] == (read_access == "open") and after["why"]
        # writes always need a credential, whatever the read rule
        r = await client.post("/admin/documents", json={"documents": [{"id": "x", "text": "x"}]})
        assert r.status_code == 401
