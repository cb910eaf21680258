"""OpenAI-compatible embeddings (`POST /v1/embeddings`, `GET /v1/models`), so existing OpenAI clients work."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from whitevec.index.versions import Bundle
from whitevec.models.encoder import EncodeResult
from whitevec.models.errors import WhiteningError

from .body import RenderedJSON, body_openapi, json_body, render_json
from .deps import check_texts, encode, get_runtime, require_api_key, served_bundle
from .errors import (
    COMMON,
    InvalidRequest,
    NotFound,
    NotReady,
    Overloaded,
    Unauthorized,
    responses,
)
from .runtime import Runtime
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
    user: str | None = None


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


router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])


@router.post("/embeddings", response_model=EmbeddingsResponse, openapi_extra=body_openapi(EmbeddingsRequest),
             responses=responses(*COMMON, Unauthorized, NotFound, Overloaded))
async def embeddings(request: Request, req: EmbeddingsRequest = Depends(json_body(EmbeddingsRequest)),
                     rt: Runtime = Depends(get_runtime), bundle: Bundle = Depends(served_bundle)) -> Response:
    """OpenAI's embeddings API over the active version: whitened (dims = `dimensions`) and normalised.
    `model` may always be `whitevec`: that alias survives a model change (a fine-tune's activation)."""
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise InvalidRequest("input must be a non-empty string or a non-empty list of non-empty strings",
                             param="input")
    check_texts(rt, texts, "input")
    name = bundle.encoder.identity.name
    if req.model != name and req.model not in ALIASES:
        raise NotFound(f"model {req.model!r} is not served here; use {name!r} (GET /v1/models)", param="model")
    try:
        bundle.pipeline.output_dim(True, req.dimensions)
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
async def models(rt: Runtime = Depends(get_runtime), bundle: Bundle = Depends(served_bundle)) -> dict:
    """The one served model, in OpenAI's list shape."""
    created = int((bundle.manifest or {}).get("created_at", 0))
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "whitevec"}
                                        for name in (bundle.encoder.identity.name, "whitevec")]}
