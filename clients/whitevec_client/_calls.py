"""Every HTTP call of the SDK, written once for both clients: method, path, body, which token it
sends, whether it may be retried, and how its answer is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, TypeVar, Union

import httpx

from ._core import Core, Routes, q
from .errors import VersionChanged
from .types import (Activated, CollectionDeleted, Deleted, Document, Filter, Fusion, Group, Hit, Hits, IndexSpec,
                    Job, KeyRevoked, Passages, SearchMode, SearchSetting, SearchTuning, StoredDocument, TrainJob, Upserted,
                    VersionList, Whitening)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

T = TypeVar("T")
Vectors = List[List[float]]
NUMPY_EXTRA = "pip install 'whitevec-client[numpy]'"


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    params: Optional[Dict[str, str]] = None
    admin: bool = False
    retry: bool = True  # idempotent: 429, 502, 503, 504 and connection errors are retried with backoff
    #: The server's advice in HTTP terms → the same advice as this call's parameter (`?confirm=true` → confirm=True)
    fixes: Optional[Dict[str, str]] = None


def _json(response: httpx.Response) -> Any:
    return response.json()


def _given(fields: Mapping[str, Any]) -> Dict[str, Any]:
    """The fields a caller gave: None means "the server's default", so it is not sent."""
    return {k: v for k, v in fields.items() if v is not None}


# --- data: embed and search --------------------------------------------------------------------------


def require_numpy() -> None:
    """Checked before anything is sent: as_numpy=True without numpy fails at once, naming the extra."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise ImportError(f"as_numpy=True needs numpy, which is not installed: {NUMPY_EXTRA}") from None


def check_texts(texts: Sequence[str], message: str = "embed takes a list of texts; wrap a single text in a list"
                ) -> None:
    """A str is a sequence of str too: refused before anything is sent, rather than one text per character."""
    if isinstance(texts, str):
        raise TypeError(message)


def embed(core: Core, routes: Routes, texts: Sequence[str], dim: Optional[int], whiten: bool,
          normalize: bool) -> List[Call[Dict[str, Any]]]:
    return [Call("POST", routes.embed, _json, {"texts": list(c), "dim": dim, "whiten": whiten, "normalize": normalize})
            for c in core.chunks(texts)]


def vectors(answers: List[Dict[str, Any]]) -> Vectors:
    """All chunks' vectors in order; VersionChanged if the chunks came from different versions."""
    versions = list(dict.fromkeys(a.get("version") for a in answers))
    if len(versions) > 1:
        raise VersionChanged(versions)
    return [v for a in answers for v in a["embeddings"]]


def as_array(rows: Vectors) -> NDArray[np.float32]:
    import numpy as np

    return np.asarray(rows, dtype=np.float32)


def _hits(response: httpx.Response) -> List[Hits]:
    answer = response.json()
    warnings = answer.get("warnings", [])  # servers before filter warnings do not send it
    return [Hits((Hit(**h) for h in r["hits"]), r["query"], answer["version"], warnings) for r in answer["results"]]


def search(core: Core, routes: Routes, query: Union[str, Sequence[str]], k: int, filter: Optional[Filter],
           nprobe: Optional[int], ef_search: Optional[int], mode: Optional[SearchMode] = None,
           fusion: Optional[Fusion] = None, explain: bool = False, group: Optional[Group] = None,
           mean_top: Optional[int] = None) -> List[Call[List[Hits]]]:
    """One query in one call; several in calls of at most the server's max_texts."""
    extra = {"k": k, **_given({"filter": filter, "nprobe": nprobe, "ef_search": ef_search, "mode": mode,
                               "fusion": dict(fusion) if fusion is not None else None,
                               "explain": True if explain else None, "group": group, "mean_top": mean_top})}
    if isinstance(query, str):
        return [Call("POST", routes.search, _hits, {"query": query, **extra})]
    return [Call("POST", routes.search, _hits, {"queries": list(c), **extra}) for c in core.chunks(query)]


# --- a collection's documents and versions ------------------------------------------------------------


def rebuild(routes: Routes, documents: Optional[Sequence[Document]], path: Optional[str],
            whitening: Optional[Whitening], index: Optional[IndexSpec], mode: Optional[str],
            confirm_shrink: Optional[bool], reencode: Optional[bool],
            search: Optional[SearchTuning] = None) -> Call[str]:
    """Answers the job id."""
    if reencode is False:  # re-whiten the served corpus: no documents
        body: Dict[str, Any] = {"reencode": False}
    elif (documents is None) == (path is None):
        raise TypeError("give exactly one of documents= or path= (or reencode=False to re-whiten what is served)")
    else:
        body = {"documents": [dict(d) for d in documents]} if documents is not None else {"path": path}
    body.update(_given({"whitening": whitening, "index": index, "mode": mode, "confirm_shrink": confirm_shrink,
                        "search": search}))
    return Call("POST", routes.rebuild, lambda r: str(r.json()["job_id"]), body, admin=True, retry=False)


def upsert(routes: Routes, documents: Sequence[Document], size: int = 10_000) -> List[Call[Upserted]]:
    """In calls of WHITEVEC_MAX_UPSERT's default (a smaller server limit answers 422 naming it)."""
    if isinstance(documents, Mapping):
        raise TypeError("upsert takes a list of documents, not one document")
    return [Call("POST", routes.documents, _json, {"documents": [dict(d) for d in documents[i : i + size]]},
                 admin=True) for i in range(0, len(documents), size)]


def delete(routes: Routes, ids: Sequence[str]) -> Call[Deleted]:
    if isinstance(ids, str):
        raise TypeError("delete takes a list of ids; wrap a single id in a list")
    return Call("POST", f"{routes.documents}/delete", _json, {"ids": list(ids)}, admin=True)


def get_document(routes: Routes, doc_id: str) -> Call[StoredDocument]:
    return Call("GET", f"{routes.documents}/{q(doc_id)}", _json, admin=True)


def versions(routes: Routes) -> Call[VersionList]:
    return Call("GET", routes.versions, _json, admin=True)


def activate(routes: Routes, version: str) -> Call[Activated]:
    return Call("POST", f"{routes.versions}/{q(version)}/activate", _json, admin=True)


# --- collections and keys -----------------------------------------------------------------------------


def create_collection(name: str, model: Optional[str], whitening: Optional[Whitening],
                      index: Optional[IndexSpec], search: Optional[SearchSetting] = None,
                      passages: Optional[Passages] = None) -> Call[Dict[str, Any]]:
    body = _given({"model": model, "whitening": whitening, "index": index, "search": search,
                   "passages": dict(passages) if passages is not None else None})
    return Call("PUT", f"/admin/collections/{q(name)}", _json, body, admin=True, retry=False,
                fixes={f"DELETE /admin/collections/{name}?confirm=true first": "delete_collection(name, confirm=True) first"})


def set_passages(name: str, passages: Optional[Passages]) -> Call[Dict[str, Any]]:
    body = {"passages": dict(passages) if passages is not None else None}
    return Call("PATCH", f"/admin/collections/{q(name)}", _json, body, admin=True)


def get_collection(name: str) -> Call[Dict[str, Any]]:
    return Call("GET", f"/admin/collections/{q(name)}", _json, admin=True)


def collections() -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/admin/collections", lambda r: list(r.json()["collections"]), admin=True)


def delete_collection(name: str, confirm: bool) -> Call[CollectionDeleted]:
    return Call("DELETE", f"/admin/collections/{q(name)}", _json, params={"confirm": "true"} if confirm else None,
                admin=True, retry=False, fixes={"add ?confirm=true": "pass confirm=True"})


def create_key(collections: Sequence[str], access: str, name: Optional[str]) -> Call[Dict[str, Any]]:
    body = {"collections": list(collections), "access": access, **_given({"name": name})}
    return Call("POST", "/admin/keys", _json, body, admin=True, retry=False)


def keys() -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/admin/keys", lambda r: list(r.json()["keys"]), admin=True)


def revoke_key(key_id: str) -> Call[KeyRevoked]:
    return Call("DELETE", f"/admin/keys/{q(key_id)}", _json, admin=True)


# --- training and jobs --------------------------------------------------------------------------------


def train(fields: Mapping[str, Any]) -> Call[Dict[str, Any]]:
    """`fields`: the train method's arguments; those left None take the server's defaults."""
    body = _given(fields)
    for key in ("examples", "pairs"):
        if key in body:
            body[key] = [dict(item) for item in body[key]]
    return Call("POST", "/admin/train", _json, body, admin=True, retry=False)


def train_job(accepted: Dict[str, Any], job: Job) -> TrainJob:
    return TrainJob(**job.model_dump(), **{k: v for k, v in accepted.items() if k != "job_id"})


def job(job_id: str) -> Call[Job]:
    return Call("GET", f"/admin/jobs/{q(job_id)}", lambda r: Job(**r.json()), admin=True)


def jobs(collection: Optional[str]) -> Call[List[Job]]:
    return Call("GET", "/admin/jobs", lambda r: [Job(**j) for j in r.json()],
                params={"collection": collection} if collection else None, admin=True)


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", f"/admin/jobs/{q(job_id)}/cancel", lambda r: Job(**r.json()), admin=True, retry=False)


def job_plot(job_id: str, kind: Optional[str] = None) -> Call[bytes]:
    return Call("GET", f"/admin/jobs/{q(job_id)}/plot.png", lambda r: r.content, params=_given({"kind": kind}) or None,
                admin=True)


# --- operations ---------------------------------------------------------------------------------------


def health() -> Call[Dict[str, Any]]:
    return Call("GET", "/healthz", _json, retry=False)


def ready(retry: bool) -> Call[Dict[str, Any]]:
    """retry=False for ready(): the state now, not after waiting it out."""
    return Call("GET", "/readyz", _json, retry=retry)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text, admin=True)
