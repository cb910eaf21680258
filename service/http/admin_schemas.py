"""Bodies of the admin API: jobs and their progress, fine-tuning, collections and access keys.

Apart from schemas.py, whose bodies are the data plane's (embed, search, documents, rebuilds), so each file
reads as one API's contract.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .schemas import IndexIn, JobAccepted, NonEmpty, SearchSettingIn, Strict, WhiteningIn, exactly_one


class TrainAccepted(JobAccepted):
    classes: int = Field(description="Classes formed from the data.")
    texts: int = Field(description="Sentences used (those in one-member classes are dropped).")
    warnings: list[str]


class JobProgress(BaseModel):
    done: int
    total: int
    phase: str | None = Field(None, description="What done/total count: `starting` (running, before the job's "
                              "first figures; total 0), `encoding` (documents), `training` (steps), `done` once "
                              "finished; none while queued.")


class JobOut(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    progress: JobProgress
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    result: dict[str, Any] | None
    detail: dict[str, Any] = Field(default_factory=dict, description="Live figures (e.g. training loss).")
    replica: str | None = Field(None, description="The replica that runs the job (WHITEVEC_REPLICA_NAME); with a "
                                "shared WHITEVEC_JOBS_DB, cancel it there.")
    collection: str = Field("default", description="The collection the job acts on.")


class ExampleIn(Strict):
    text: NonEmpty
    label: str | int


class PairIn(Strict):
    text_a: NonEmpty
    text_b: NonEmpty
    score: float


class TrainRequest(Strict):
    __chunked__ = {"examples": ExampleIn, "pairs": PairIn}  # validated item by item when the body is large

    examples: list[ExampleIn] | None = Field(None, min_length=1, description="Same label, same meaning.")
    pairs: list[PairIn] | None = Field(None, min_length=1, description="Scored pairs; see pair_threshold.")
    path: NonEmpty | None = Field(None, description="A JSONL (examples or pairs) or TSV (pairs) file in the "
                                  "import folder.")
    pair_threshold: float = Field(4.0, description="Pairs scoring at or above it are joined into one class.")
    eval_path: NonEmpty | None = Field(None, description="Pairs file in the import folder: Spearman before/after.")
    epochs: int = Field(3, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(5e-5, gt=0, description="Encoder learning rate.")
    centre_lr: float = Field(1e-2, gt=0, description="Class-centre learning rate.")
    warmup: float = Field(0.1, ge=0, lt=1, description="Fraction of steps with linear warm-up.")
    grad_accum: int = Field(1, ge=1, le=1024)
    max_length: int = Field(64, ge=2, le=512)
    seed: int = 0
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    scale: float = Field(30.0, gt=0, description="s: logit scale.")
    margin: float = Field(0.35, ge=0, lt=1, description="m: margin subtracted from the true class's cosine.")
    activate: bool = Field(False, description="Re-encode the corpus with the new model, refit whitening, "
                           "rebuild the index and serve them as one new version.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$", description="Output model folder name.")
    collection: str = Field("default", description="The collection whose model is fine-tuned and, with `activate`, "
                            "whose corpus is re-encoded (only that collection changes).")
    whitening: Literal["auto"] | None = Field(None, description="`auto`: the activation's (β, γ, dim) are tuned on "
                                              "`eval_path`'s pairs for the fine-tuned model (needs `activate` and "
                                              "`eval_path`); null: the served setting is kept.")

    @model_validator(mode="after")
    def _one_of(self) -> "TrainRequest":
        if sum(x is not None for x in (self.examples, self.pairs, self.path)) != 1:
            raise ValueError("give exactly one of `examples`, `pairs` or `path`")
        if self.whitening == "auto" and (self.eval_path is None or not self.activate):
            raise ValueError("whitening \"auto\" tunes the activation's whitening on labelled pairs: set "
                             "`activate` to true and `eval_path` to a pairs file in the import folder")
        return self

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "examples": [{"text": "How do I reset my password?", "label": "pw"},
                     {"text": "I forgot my password", "label": "pw"},
                     {"text": "Where is my parcel?", "label": "ship"},
                     {"text": "Track my order", "label": "ship"}],
        "activate": True}], "oneOf": exactly_one("examples", "pairs", "path")})


class PassagesIn(Strict):
    max_tokens: int | None = Field(None, ge=3, description="Tokens per passage, [CLS] and [SEP] included; at most "
                                   "the model's max length (null: the model's max length).")
    overlap: int | None = Field(None, ge=0, description="Tokens of a passage's last sentences carried into the "
                                "next; fewer than max_tokens - 2 (null: an eighth of a passage).")


class CollectionPatch(Strict):
    passages: PassagesIn | None = Field(description="The collection's passages from its next rebuild (a rebuild "
                                        "splits its documents anew and says so); null: one vector per document.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"passages": {"max_tokens": 128, "overlap": 16}}]})


class CollectionCreate(Strict):
    model: NonEmpty | None = Field(None, description="null: the server's model (WHITEVEC_MODEL_DIR, else the bundled "
                                   "one); `bundled`; or a folder name in the data dir's models/ (a fine-tune).")
    whitening: WhiteningIn | None = Field(None, description="(β, γ, dim) this collection's rebuilds use by default.")
    index: IndexIn | None = Field(None, description="The index spec its rebuilds use by default.")
    search: SearchSettingIn | None = Field(None, description="How /search searches without `mode` (a version tuned "
                                           "by auto search overrides it), and BM25's knobs.")
    passages: PassagesIn | None = Field(None, description="Split long documents into passages at every rebuild: "
                                        "each passage a row of the index, hits grouped per document. null (the "
                                        "default): one vector per document.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"whitening": {"beta": 1, "gamma": 1, "dim": 256}}]})


class KeyCreate(Strict):
    collections: list[NonEmpty] = Field(min_length=1, max_length=1024, description="Collections the key may use.")
    access: Literal["read", "write"] = Field(description="read: search and embed; write: also upsert, delete "
                                             "and get documents.")
    name: str | None = Field(None, max_length=200, description="A label for people (shown in GET /admin/keys).")

    model_config = ConfigDict(json_schema_extra={"examples": [{"collections": ["faq"], "access": "read",
                                                               "name": "faq website"}]})
