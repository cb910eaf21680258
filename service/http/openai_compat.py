"""OpenAI-compatible embeddings (`POST /v1/embeddings`, `GET /v1/models`), so existing OpenAI clients work."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from whitevec.index.bundle import Bundle
from whitevec.models.encoder import EncodeResult
from whitevec.models.errors import WhiteningError

from ..engine.access import Pass
from .access import READ_SECURITY, data_caller, data_pass
from .body import RenderedJSON, body_openapi, read_json, render_json
from ..engine.collection import Collection
from .deps import check_texts, encode, get_runtime
from .errors import COMMON, InvalidRequest, NotFound, NotReady, Overloaded, Unauthorized, responses
from ..engine.runtime import Runtime
from .schemas import NonEmpty, Strict

#: Model names a client may send besides the served model's own.
ALIASES = ("whitevec", "default")


class EmbeddingsRequest(Strict):
    """Validated as strictly as /embed: non-empty texts, no token arrays, no coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra={"examples": [
        {"input": ["hello world", "你好，世界"], "model": "whitevec", "encoding_format": "float"}]})

    input: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)] = Field(description="Text or non-empty list of texts (token arrays are "
                                             "not accepted).")
    model: str = Field(description="The served model's name (GET /v1/models), or `whitevec`.")
    dimensions: int | None = Field(None, ge=1, description="Kept whitened dims, at most the fitted dim.")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(None, max_length=256, description="An id for your end user, as OpenAI takes it; "
                             "accepted and not stored.")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/embeddings", response_model=EmbeddingsResponse,
             openapi_extra=body_openapi(EmbeddingsRequest) | READ_SECURITY,
             responses=responses(*COMMON, Unauthorized, NotFound, Overloaded))
async def embeddings(request: Request) -> Response:
    """OpenAI's embeddings API over the collection `default`'s active version: whitened (dims =
    `dimensions`) and normalised. `model` may always be `whitevec`: that alias survives a model change
    (a fine-tune's activation); a collection's name selects that collection's model and whitening."""
    caller = data_pass(request)  # 401 before the body is read
    req = await read_json(request, EmbeddingsRequest)
    rt: Runtime = request.app.state.runtime
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise InvalidRequest("input must be a non-empty string or a non-empty list of non-empty strings",
                             param="input")
    await check_texts(rt, texts, "input", single=isinstance(req.input, str))
    col = _collection_for(rt, caller, req.model)
    with col.served.lease() as bundle:
        if bundle is None:
            raise NotReady(col.load_error or "the model is still loading; retry shortly", headers={"Retry-After": "2"})
        return await _embeddings(request, req, rt, bundle, texts)


def _collection_for(rt: Runtime, caller: Pass, model: str) -> Collection:
    """`model`: the default collection's model name or an alias; else a collection the caller may use."""
    default = rt.gate.reach(caller, "default", "read") if caller.sees("default") else None
    bundle = default.bundle if default is not None else None
    if model in ALIASES or (bundle is not None and model == bundle.encoder.identity.name):
        return rt.gate.reach(caller, "default", "read")  # says why, when the caller may not use it
    try:
        return rt.gate.reach(caller, model, "read")
    except NotFound:
        # the stable alias first: a model name changes with every fine-tune, `whitevec` never does
        raise NotFound(f"model {model[:100]!r} is not served here; use \"whitevec\" (the default collection's model, "
                       "whatever it is now) or a collection's name (GET /v1/models lists them)", param="model") from None


async def _embeddings(request: Request, req: EmbeddingsRequest, rt: Runtime, bundle: Bundle,
                      texts: list[str]) -> Response:
    name = bundle.encoder.identity.name
    try:
        bundle.pipeline.output_dim(True, req.dimensions, "dimensions")
    except WhiteningError as exc:  # OpenAI answers 400 for dimensions it cannot give: so does /v1
        raise InvalidRequest(str(exc), param="dimensions") from exc

    def answer(raw: EncodeResult) -> bytes:  # in the batcher's output thread
        vectors = bundle.pipeline.postprocess(raw.vectors, True, req.dimensions, True).astype(np.float32)
        if req.encoding_format == "base64":
            data: list = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            data = list(vectors)  # rows stay float32 arrays: orjson writes them directly
        tokens = int(sum(raw.tokens))
        return render_json({
            "object": "list", "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        })
    return RenderedJSON(await encode(rt, bundle, texts, request, answer))


@router.get("/models", responses=responses(Unauthorized, NotReady))
async def models(rt: Runtime = Depends(get_runtime), caller: Pass = Depends(data_caller)) -> dict:
    """The default collection's model (and its aliases `whitevec` and `default`), then the collections the
    caller may use, each a `model` /v1/embeddings accepts; in OpenAI's list shape."""
    ids: list[tuple[str, int]] = []
    visible = rt.gate.visible(caller)
    for col in visible:
        if col.name == "default":
            bundle = col.require_bundle()
            created = int((bundle.manifest or {}).get("created_at", 0))
            ids += [(bundle.encoder.identity.name, created), ("whitevec", created), ("default", created)]
    ids += [(c.name, int(c.created_at or 0)) for c in visible if c.name != "default"]
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "whitevec"}
                                        for name, created in ids]}
