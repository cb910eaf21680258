"""The admin token's own routes: collections, access keys, training and jobs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from whitevec.index.documents import resolve_import_path
from whitevec.index.spec import IndexSpec
from whitevec.index import naming
from whitevec.models.evaluation import read_pairs
from whitevec.models.tuning import AutoWhitening, check_pairs
from whitevec.models.training import TrainConfig, classes_from_examples, classes_from_pairs, read_training_file

from . import errors
from ..engine.access import Pass
from .access import require_admin
from .body import body_openapi, json_body, read_json
from .deps import get_runtime
from .errors import COMMON, Conflict, Forbidden, NotFound, Unauthorized, responses
from ..engine.jobs import JobNotCancellable, UnknownJob
from ..engine.runtime import Runtime
from .admin_schemas import CollectionCreate, CollectionPatch, JobOut, KeyCreate, TrainAccepted, TrainRequest

ADMIN_ERRORS = (*COMMON, Unauthorized, Forbidden)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
log = logging.getLogger("whitevec")


# -- collections ------------------------------------------------------------------------------------------
@router.put("/collections/{name}", status_code=201, openapi_extra=body_openapi(CollectionCreate, required=False),
            responses=responses(*ADMIN_ERRORS, Conflict, NotFound), tags=["collections"])
async def create_collection(name: str, caller: Pass = Depends(require_admin),
                            req: CollectionCreate = Depends(json_body(CollectionCreate, optional=True)),
                            rt: Runtime = Depends(get_runtime)) -> Response:
    """A new, empty collection with its own whitening, index, versions and change log; it serves its
    model at once (/collections/{name}/embed) and searches once documents are added or rebuilt in.
    Collections on one model share its weights."""
    naming.check("collection", name)
    if any(c.name == name for c in rt.gate.visible(caller)):
        raise Conflict(f"collection {name!r} exists already; DELETE /admin/collections/{name}?confirm=true first, "
                       "or choose another name", param="name")
    whitening = req.whitening.model_dump(exclude_none=True) if req.whitening else None
    if whitening and whitening.get("auto"):  # its pairs must exist and be usable now, not at the first rebuild
        path = resolve_import_path(rt.settings.import_dir, whitening["auto"]["pairs"])
        pairs = await asyncio.to_thread(read_pairs, path)
        check_pairs(pairs.scores, pairs.a, pairs.b, whitening["auto"]["pairs"])
    index = req.index.model_dump(exclude_none=True) if req.index else None
    if index:
        try:
            IndexSpec(**{"type": rt.settings.index_type, **index})
        except ValueError as exc:
            raise errors.InvalidRequest(str(exc), param="index") from exc
    search = req.search.model_dump(exclude_none=True) if req.search else None
    passages = req.passages.model_dump() if req.passages else None
    col = await asyncio.to_thread(rt.create_collection, caller, name, req.model, whitening, index, search, passages)
    d = col.details()
    setting = await asyncio.to_thread(col.corpus_builds.passage_setting, col.require_bundle().encoder)
    return JSONResponse({"name": name, "model": d["model"], "whitening": d["whitening"], "index": d["index"],
                         "passages": None if setting is None else setting.to_dict(), "documents": 0}, status_code=201)


@router.patch("/collections/{name}", openapi_extra=body_openapi(CollectionPatch),
              responses=responses(*ADMIN_ERRORS, NotFound), tags=["collections"])
async def update_collection(name: str, request: Request, caller: Pass = Depends(require_admin),
                            rt: Runtime = Depends(get_runtime)) -> dict:
    """Change how the collection splits documents into passages. Served versions are left as they are: the
    next rebuild (any kind, re-whitening too) splits every document anew and its job result says so."""
    col = rt.gate.reach(caller, name, "admin")  # 404 before the body is read
    req = await read_json(request, CollectionPatch)
    setting = await asyncio.to_thread(col.set_passages, req.passages.model_dump() if req.passages else None)
    served = col.bundle.layout.setting if col.bundle is not None and col.bundle.retriever is not None else None
    return {"name": name, "passages": setting,
            "served": None if served is None else served.to_dict(),
            "next": "the next rebuild splits the documents anew" if (setting or None) != (
                served.to_dict() if served else None) else "the served version is split this way already"}


@router.get("/collections", responses=responses(Unauthorized, Forbidden), tags=["collections"])
async def list_collections(rt: Runtime = Depends(get_runtime), caller: Pass = Depends(require_admin)) -> dict:
    """Every collection: name, model, documents, active version, dim, creation time."""
    return {"collections": await asyncio.to_thread(lambda: [c.summary() for c in rt.gate.visible(caller)])}


@router.get("/collections/{name}", responses=responses(Unauthorized, Forbidden, NotFound), tags=["collections"])
async def get_collection(name: str, rt: Runtime = Depends(get_runtime), caller: Pass = Depends(require_admin)) -> dict:
    """One collection, with the whitening and index its served version has (or its rebuilds will use)."""
    col = rt.gate.reach(caller, name, "admin")
    return await asyncio.to_thread(col.details)


@router.delete("/collections/{name}", responses=responses(Unauthorized, Forbidden, NotFound, Conflict),
               tags=["collections"])
async def delete_collection(name: str, confirm: bool = Query(False, description="true: really delete its documents"),
                            rt: Runtime = Depends(get_runtime), caller: Pass = Depends(require_admin)) -> dict:
    """Remove a collection: its versions, change logs and the indexes its backend keeps elsewhere. Keys keep
    their other collections."""
    col = rt.gate.reach(caller, name, "admin")
    if name == "default":
        raise Conflict("the collection `default` cannot be deleted (the routes without a collection use it)")
    documents = (await asyncio.to_thread(col.summary))["documents"]
    if not confirm:
        raise Conflict(f"collection {name!r} holds {documents} documents: add ?confirm=true to delete it and them",
                       param="confirm")
    try:
        documents = await asyncio.to_thread(rt.delete_collection, caller, name)
    except KeyError:
        raise NotFound(f"no collection named {name!r}", param="name") from None
    return {"deleted": name, "documents": documents}


# -- access keys ------------------------------------------------------------------------------------------
@router.post("/keys", status_code=201, openapi_extra=body_openapi(KeyCreate), responses=responses(*ADMIN_ERRORS, NotFound),
             tags=["keys"])
async def create_key(caller: Pass = Depends(require_admin), req: KeyCreate = Depends(json_body(KeyCreate)),
                     rt: Runtime = Depends(get_runtime)) -> Response:
    """A key for some collections, `read` (search, embed) or `write` (also documents). The key is in this
    answer only: the server keeps its SHA-256. `read_access` says who may search now, and what creating the
    key changed (the first key closes an `auto` server's searching to credentials)."""
    known = {c.name for c in rt.gate.visible(caller)}
    for i, name in enumerate(req.collections):
        if name not in known:
            raise NotFound(f"collections[{i}]: no collection named {name[:100]!r}; create it first "
                           "(PUT /admin/collections/{name})", param="collections")
    was_open, had_keys = rt.gate.open, rt.keys.any
    made = await asyncio.to_thread(rt.keys.create, req.collections, req.access, req.name)
    access = rt.gate.read_access()
    said = []
    if was_open and not access["open"]:
        said.append("searching and embedding were open to anyone and now need a credential (an access key, "
                    "WHITEVEC_API_KEY or the admin token); revoking keys does not reopen them, WHITEVEC_READ_ACCESS=open "
                    "does")
    if not had_keys:
        said.append("/metrics and /readyz now name collections to the admin token only (tenants must not learn "
                    "each other's)")
    changed = "; ".join(said) or "nothing: " + str(access["why"])
    if said:
        log.warning("access changed: %s", changed)
    return JSONResponse({**made, "read_access": {**access, "changed": changed}}, status_code=201)


@router.get("/keys", responses=responses(Unauthorized, Forbidden), tags=["keys"])
async def list_keys(rt: Runtime = Depends(get_runtime)) -> dict:
    """Ids, names, scopes, creation and last-use times; never the keys."""
    return {"keys": await asyncio.to_thread(rt.keys.list)}


@router.delete("/keys/{key_id}", responses=responses(Unauthorized, Forbidden, NotFound), tags=["keys"])
async def revoke_key(key_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    """Refused at once here; on other replicas within WHITEVEC_ALIAS_POLL_S."""
    if not await asyncio.to_thread(rt.keys.revoke, key_id):
        raise NotFound(f"no key with id {key_id[:100]!r}; GET /admin/keys lists them")
    return {"revoked": key_id}


# -- training and jobs --------------------------------------------------------------------------------------
@router.post("/train", status_code=202, response_model=TrainAccepted, openapi_extra=body_openapi(TrainRequest),
             responses=responses(*ADMIN_ERRORS, NotFound))
async def train(caller: Pass = Depends(require_admin),
                req: TrainRequest = Depends(json_body(TrainRequest)), rt: Runtime = Depends(get_runtime)) -> Response:
    """Start an AM-Softmax fine-tuning job in a separate process from the collection's model; `activate`
    swaps in the new model with a re-encoded corpus, refitted whitening and a rebuilt index, as one
    version of that collection."""
    col = rt.gate.reach(caller, req.collection, "admin")
    bundle = col.require_bundle()
    examples = [e.model_dump() for e in req.examples] if req.examples is not None else None
    pairs = [p.model_dump() for p in req.pairs] if req.pairs is not None else None
    if req.path is not None:
        path = resolve_import_path(rt.settings.import_dir, req.path)
        examples, pairs = await asyncio.to_thread(read_training_file, path)
    data = classes_from_examples(examples) if examples is not None else classes_from_pairs(pairs or [], req.pair_threshold)
    eval_path = None
    if req.eval_path is not None:
        eval_path = resolve_import_path(rt.settings.import_dir, req.eval_path)
        await asyncio.to_thread(read_pairs, eval_path)
    if req.activate and bundle.retriever is None:
        where = ("(POST /admin/index/rebuild)" if col.name == "default"
                 else f"in collection {col.name} (POST /admin/collections/{col.name}/rebuild)")
        raise errors.InvalidRequest(f"activate needs an index to re-encode: build one first {where}, or set "
                                    "activate to false", param="activate")
    config = TrainConfig(**req.model_dump(include=set(TrainConfig.__dataclass_fields__)))
    out_dir = rt.training.model_output_dir(req.name, base=bundle.encoder.identity.name)
    supervisor = rt.training
    try:
        job_id = await asyncio.to_thread(
            rt.jobs.submit, "train",
            lambda ctx: supervisor.train(ctx, col, supervisor.training_spec(
                col, asdict(config), examples, pairs, req.pair_threshold, eval_path, out_dir), req.activate,
                auto=AutoWhitening(str(eval_path), req.eval_path) if req.whitening == "auto" else None),
            on_end=lambda: supervisor.release_model_name(out_dir), collection=col.name)
    except BaseException:
        supervisor.release_model_name(out_dir)
        raise
    return JSONResponse({"job_id": job_id, "classes": data.n_classes, "texts": len(data.texts),
                         "warnings": data.warnings, "model_name": out_dir.name}, status_code=202)


def job_or_404(rt: Runtime, job_id: str) -> dict:
    try:
        return rt.jobs.get(job_id)
    except UnknownJob:
        raise NotFound(f"no job with id {job_id!r}; GET /admin/jobs lists them") from None


@router.get("/jobs", response_model=list[JobOut], responses=responses(Unauthorized, Forbidden))
async def list_jobs(collection: str | None = Query(None, description="Only this collection's jobs."),
                    rt: Runtime = Depends(get_runtime)) -> list[dict]:
    """The latest 100 jobs, newest first."""
    return await asyncio.to_thread(rt.jobs.list, 100, collection)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=responses(Unauthorized, Forbidden, NotFound))
async def get_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    return await asyncio.to_thread(job_or_404, rt, job_id)


@router.get("/jobs/{job_id}/plot.png", response_class=FileResponse, responses=responses(Unauthorized, Forbidden, NotFound))
async def job_plot(job_id: str, kind: Literal["whitening", "search"] | None = None,
                   rt: Runtime = Depends(get_runtime)) -> FileResponse:
    """An auto-tuning job's picture: held-out Spearman against dim, one line per (β, γ) (auto whitening), or
    held-out hit@1 against the fusion's alpha (auto search), the choice starred. A job that tuned both
    draws the whitening's here and the search's with `?kind=search`."""
    await asyncio.to_thread(job_or_404, rt, job_id)
    folder = rt.settings.data_dir / "reports"
    path = folder / (f"{job_id}-search.png" if kind == "search" else f"{job_id}.png")
    if not job_id.isalnum() or not path.is_file():
        raise NotFound(f"job {job_id!r} has no plot (only rebuilds and trainings with auto whitening or auto "
                       "search draw one)")
    return FileResponse(path, media_type="image/png")


@router.post("/jobs/{job_id}/cancel", response_model=JobOut,
             responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def cancel_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    """Stop a queued job at once (it ends `cancelled`), or ask a running one to stop; the served
    version is untouched either way."""
    await asyncio.to_thread(job_or_404, rt, job_id)
    try:
        return await asyncio.to_thread(rt.jobs.cancel, job_id)
    except JobNotCancellable as exc:
        raise Conflict(str(exc)) from exc
