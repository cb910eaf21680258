"""Every knob of the service, from the environment (prefix WHITEVEC_) or arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:  # the encoder module loads torch: commands that read settings and run no model start at once
    from whitevec.models.encoder import EncoderSpec


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHITEVEC_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Versions, jobs database and the import folder live here.")
    model_dir: Path | None = Field(None, description="Local Hugging Face model folder; none: bundled all-MiniLM-L6-v2. "
                                   "Used until an index exists; after that the active version's model is served.")
    pooling: str | None = Field(None, description="cls, pooler, last-avg or first-last-avg; none: the folder's own.")
    tokenizer: str | None = Field(None, description="bert or wobert; none: the folder's own (bert).")
    max_length: int | None = Field(None, description="Tokens per text; longer texts are truncated and flagged.")
    device: str | None = Field(None, description="Torch device for the encoder; none: cuda when available, else cpu.")
    use_gpu_index: bool = Field(True, description="Search on the GPU when FAISS or torch can.")
    engine: Literal["auto", "torch", "torch-half", "onnx", "onnx-int8", "onnx-int8-rr", "openvino",
                    "openvino-bf16", "openvino-mixed"] = Field(
        "auto", description="Inference engine for new versions. auto: torch-half on a GPU; on a CPU with AMX-BF16 "
        "(amx_bf16 in its flags) openvino-bf16 (bf16: 2.5-3× ONNX fp32 there, faster than int8, search results within the retrieval "
        "contract of docs/performance.md); on a CPU with AVX-512 BF16 but no AMX openvino-mixed (first layer f32, "
        "the rest bf16: within the contract, which OpenVINO's bf16 everywhere misses there, and faster than torch-half); "
        "elsewhere onnx; /readyz says which and why. torch (float32); torch-half "
        "(bf16, fp16 on GPUs without bf16: other vectors, slow on CPUs without bf16 instructions); onnx (ONNX "
        "Runtime fp32: the same vectors as torch, CPU only); onnx-int8-rr (int8, 7-bit weights: 1.9-2.3× fp32 on "
        "CPUs with VNNI, other vectors that change search results more than the contract allows, correct on any "
        "x86 CPU); onnx-int8 (int8, 8-bit weights: slower than onnx-int8-rr and no closer to fp32); openvino "
        "(OpenVINO fp32: the same vectors as torch, CPU only); openvino-bf16 (OpenVINO in bf16: other vectors, "
        "CPU only); openvino-mixed (OpenVINO, the embeddings and first layer in fp32, the rest in bf16: other "
        "vectors, CPU only). A version is always served with the engine it was built with, or an equivalent one (torch = "
        "onnx = openvino). The ONNX export and the OpenVINO IR (seconds, once per model) are cached in "
        "DATA_DIR/engines.")

    whiten_beta: float = Field(0.0, ge=0, le=1, description="Default β for rebuilds (mean removal). 0 keeps "
                               "similarity-trained models' accuracy; 1 is classic BERT-whitening.")
    whiten_gamma: float = Field(0.0, ge=0, le=1, description="Default γ for rebuilds (variance equalisation).")
    whiten_dim: int | None = Field(None, ge=1, description="Default kept dims for rebuilds; none: all.")
    index_type: str = Field("flat", description="Default index type for rebuilds: flat, ivf or hnsw.")
    index_backend: Literal["faiss", "milvus"] = Field(
        "faiss", description="Where versions keep their index: faiss (embedded, in the data dir) or milvus "
        "(one collection per version, served through an alias; see WHITEVEC_MILVUS_URI).")
    milvus_uri: str | None = Field(None, description="With the milvus backend: a local file path (embedded "
                                   "Milvus Lite) or http://host:19530 (Milvus standalone or cluster); "
                                   "default BUNDLE_DIR/milvus.db (the data dir when no bundle dir is set).")
    milvus_alias: str = Field("whitevec", description="The Milvus alias that names the served version's Milvus "
                              "collection for the collection `default`; other collections use `<alias>_<name>`.")
    alias_poll_s: float = Field(2.0, gt=0, description="How often a replica syncs with the others: collections "
                                "created or deleted in a shared bundle dir, access keys created or revoked, and (milvus "
                                "backend) each collection's alias — when another replica has switched it, this one "
                                "loads that version's model and whitening, then serves them (never vectors of one "
                                "model against another's index).")
    bundle_dir: Path | None = Field(None, description="Where versions (model reference, whitening, index parts, "
                                    "the active pointer) and fine-tuned models live; none: DATA_DIR. Replicas "
                                    "behind one load balancer point it at one shared folder (the milvus backend only: "
                                    "FAISS replicas never follow each other, so a server refuses it there) "
                                    "and keep a DATA_DIR each.")
    jobs_db: str | None = Field(None, description="Job records: a SQLite file path (replicas may share it on a "
                                "shared filesystem) or a postgresql://user:password@host/db URL (needs "
                                "whitevec[postgres]); each replica restarts only its own unfinished jobs. none: "
                                "DATA_DIR/jobs.sqlite.")
    replica_name: str | None = Field(None, description="This replica's name in shared job records; none: "
                                     "host name and DATA_DIR.")

    max_batch: int | None = Field(None, ge=1, description="Most texts the batcher sends to the model at once; none: "
                                  "the engine's tuned value (64 for torch-half, 32 for the others).")
    max_batch_tokens: int | None = Field(None, ge=1, description="Most padded tokens (rows × longest row) in one "
                                         "model batch (a single longer text still runs alone); none: the engine's "
                                         "tuned value (16384 for torch-half, 8192 for the others).")
    max_queue_tokens: int = Field(32768, ge=1, description="Most tokens (after truncation) admitted and not yet "
                                  "encoded; beyond it requests get 429. A lone request larger than this still runs.")
    max_texts: int = Field(256, ge=1, description="Most texts (or queries) in one /embed or /search request.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest text accepted, in characters.")
    max_k: int = Field(100, ge=1, description="Largest k for /search.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest request body; beyond it 413.")
    max_documents: int = Field(2_000_000, ge=2, description="Most documents in one rebuild.")
    max_upsert: int = Field(10_000, ge=1, description="Documents per POST /admin/documents call; larger sets "
                            "go through the rebuild job (mode merge).")
    max_nprobe: int = Field(2048, ge=1, description="Largest per-request `nprobe` on /search (ivf).")
    max_ef_search: int = Field(4096, ge=1, description="Largest per-request `ef_search` on /search (hnsw).")
    compact_changes: int = Field(10_000, ge=1, description="Upserted + deleted documents held in a version's change "
                                 "log before they are folded into a new version (also more than a quarter of the "
                                 "corpus): searches over the log are exact and grow with it.")
    min_approx_vectors: int = Field(10_000, ge=1, description="Below this many documents a rebuild asking for "
                                    "ivf or hnsw builds flat (exact and faster at that size), with a warning.")

    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin; none: one is generated "
                                          "at start and printed, so admin is never open.")
    api_key: SecretStr | None = Field(None, description="Bearer key that reads every collection (/embed, /search, "
                                      "/v1/*); set, it closes searching to credentials under WHITEVEC_READ_ACCESS=auto.")
    read_access: Literal["auto", "open", "keys"] = Field(
        "auto", description="Who may search and embed. auto: anyone until the server has an API key or has ever had "
                            "an access key, then a credential; open: anyone, always (keys still scope writes and "
                            "admin); keys: a credential, always.")
    keep_versions: int = Field(3, ge=2, description="Versions kept on disk, by activation history: the active "
                               "and the previously active one always, then the most recently activated.")
    keep_models: int = Field(2, ge=0, description="Fine-tuned model folders in DATA_DIR/models kept besides those "
                             "used by kept versions (the newest ones).")
    train_threads: int = Field(max(1, (os.cpu_count() or 2) // 2), ge=1,
                               description="Torch threads of the training process (the rest keep serving).")

    @property
    def data_root(self) -> Path:
        """Where collections/ and models/ live: WHITEVEC_BUNDLE_DIR (shared by replicas), else the data dir."""
        return self.bundle_dir if self.bundle_dir is not None else self.data_dir

    @property
    def engine_cache(self) -> Path:
        """ONNX exports, keyed by the model's fingerprint."""
        return self.data_dir / "engines"

    @property
    def import_dir(self) -> Path:
        """Rebuild and training files must lie inside this folder."""
        return self.data_dir / "import"

    @property
    def backend_options(self) -> dict[str, str | None]:
        """What the index backend is opened with beside its kind (index.backends.IndexBackend)."""
        return {"uri": self.milvus_uri, "alias_prefix": self.milvus_alias}

    def encoder_spec(self, model_dir: Path | None = None, engine: str | None = None) -> EncoderSpec:
        """The configured encoder (WHITEVEC_MODEL_DIR, POOLING, TOKENIZER, MAX_LENGTH, ENGINE, DEVICE), on
        `model_dir` and `engine` when given."""
        from whitevec.models.encoder import EncoderSpec

        return EncoderSpec(model_dir if model_dir is not None else self.model_dir, self.pooling, self.tokenizer,
                           self.max_length, engine or self.engine, self.device, self.max_batch, self.engine_cache)
