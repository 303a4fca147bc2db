"""One settings object for the service, the CLI and the jobs.

Settings are read from the environment (prefix ``CBIR_``) and may be overridden by CLI flags; they are built
inside ``create_app``/the CLI, never at import time, so tests can point a whole app at a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# models.defaults imports no torch (2 s), which `cbir --help` and the commands that need no model must not pay
# for (tests/app/test_cli_startup.py checks both).
from app.encoders import normalise_encoder
from index.factory import AUTO, INDEX_TYPES
from models.defaults import CPU_BATCH, CUDA_BATCH, DEFAULT_BACKBONE, DEFAULT_HEAD

__all__ = ["DEFAULT_BACKBONE", "Settings"]

# The index types registered in index/faiss/types.py, as a Literal so that a wrong name is refused with the
# list (`Input should be 'auto', 'flat', ...`); mypy, which cannot read a computed Literal, sees a str.
if TYPE_CHECKING:
    IndexTypeSetting = str
else:
    IndexTypeSetting = Literal[(AUTO, *INDEX_TYPES)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CBIR_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Where the database, index and images live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file cbir.db in the data directory."
    )
    device: str = Field(default="auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    encoder: str | None = Field(
        default=None,
        description="dae:PATH serves a trained autoencoder checkpoint (`cbir train autoencoder`); unset: the "
        "backbone and head settings.",
    )
    backbone: str = DEFAULT_BACKBONE
    head: str = DEFAULT_HEAD
    weights: Path | None = Field(
        default=None, description="Backbone weights file (.pth) for a non-default backbone."
    )
    max_side: int = Field(default=320, ge=32, le=2048)
    scales: str = Field(
        default="1",
        description="Multi-scale descriptors: comma-separated factors of max_side, e.g. 1,0.7071,0.5.",
    )
    fitted: Path | None = Field(
        default=None,
        description="Parameters fitted by `cbir fit` (NetVLAD centroids, whitening); part of the encoder.",
    )
    # On by default: Corel-1K mAP 0.911 -> 0.960 with P@10 0.972 -> 0.979 (`cbir evaluate`, README).
    query_expansion: int = Field(
        default=10, ge=0, le=100, description="Query expansion: neighbours averaged into the query; 0: off."
    )
    database_augmentation: int = Field(
        default=10, ge=0, le=100, description="Database augmentation: neighbours averaged per hit; 0: off."
    )
    rerank_alpha: float = Field(default=3.0, ge=0, le=20, description="Re-ranking weight: similarity**alpha.")
    rerank_shortlist: int = Field(  # at least the largest k a search may ask for (100)
        default=200, ge=100, le=10_000, description="How many first-pass results the re-ranking re-orders."
    )
    # bench/duplicates.py, default encoder, Corel-1K: at 0.9, 9 pairs of the 499,500 pairs of distinct
    # photos, and re-saved, cropped and brightened copies found 99.5-100 % (README, "Near-duplicates").
    duplicate_threshold: float = Field(
        default=0.9, gt=0, le=1, description="Cosine similarity from which two images are near-duplicates."
    )
    # Same picture or only similar (issue 13; app/search/verification.py, README "Choosing a descriptor").
    verify_candidates: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Geometric verification: how many first results (by plain cosine) are checked for "
        "being the same picture as the query; 0: off.",
    )
    # Vector index (index/factory.py; README "Index types"). auto: Flat while exact search is fast enough,
    # then HNSW while it fits the memory budget, then IVF-Flat, else IVF-PQ.
    index_type: IndexTypeSetting = Field(
        default=AUTO,
        description=f"{AUTO} or one of {', '.join(INDEX_TYPES)}; `cbir index-build` applies a change.",
    )
    index_memory_mb: int = Field(
        default=8192, ge=16, description="Memory budget of the index for the auto choice (IVF-PQ beyond it)."
    )
    nprobe: int | None = Field(
        default=None, ge=1, le=65536, description="IVF cells scanned per query [the index's default, 16]."
    )
    ef_search: int | None = Field(
        default=None, ge=1, le=4096, description="HNSW candidate list per query [the index's default, 128]."
    )
    search_threads: int = Field(
        default=1, ge=1, le=256, description="FAISS threads per search request (one query each)."
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description=f"Images per forward pass; default by device: {CPU_BATCH} on CPU, {CUDA_BATCH} on CUDA.",
    )
    commit_every: int = Field(
        default=256, ge=1, description="Bulk job: commit database and index every N images."
    )
    workers: int = Field(
        default=2, ge=1, le=64, description="Bulk job: processes reading and decoding images (one per core)."
    )
    gpu_decode: bool = Field(
        default=True, description="Bulk job on CUDA: decode JPEGs on the GPU (nvJPEG); others on the CPU."
    )
    compile: bool = Field(
        default=False, description="torch.compile the backbone: faster long GPU jobs, slower start."
    )
    # --- inference runtime (issue 17; models/runtimes, README "Inference runtimes") ---------------------
    runtime: Literal[
        "auto", "torch", "torch_bf16", "openvino", "openvino_bf16", "openvino_int8", "onnxruntime"
    ] = Field(
        default="auto",
        description="How the backbone runs: auto (CUDA: torch; CPU: OpenVINO bf16 on AMX, else OpenVINO "
        "fp32, else ONNX Runtime, else torch), or a name; openvino_int8 needs `cbir optimize` first.",
    )
    runtime_cache: Path | None = Field(
        default=None,
        description="Where converted and calibrated models are kept [DATA_DIR/runtime-cache].",
    )
    # --- end of inference runtime settings ---------------------------------------------------------------
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=100_000_000, ge=1)
    # Two forward passes of one thread each, none waiting: on the 2-core machine, against one pass of two
    # threads with one waiting, 15.8 answers/s instead of 12.8 at 32 clients (p99 256 ms against 240) and
    # 21.3 instead of 16.8 at the saturating concurrency; a lone search takes ~75 ms instead of ~60
    # (bench/load.py, README "Under load").
    inference_workers: int = Field(default=2, ge=1, le=64, description="Inferences run at once by the API.")
    inference_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="`cbir serve` on CPU: torch threads (shared by the inference workers) [cores / workers].",
    )
    max_queue: int = Field(
        default=0, ge=0, description="Requests waiting for inference before new ones get 503 + Retry-After."
    )
    queue_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for inference before 503.")
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="On SIGTERM, how long requests in flight may take to finish."
    )
    read_requires_key: bool = Field(
        default=False, description="Once API keys exist, whether reads (search, get) need a read key too."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='Origins allowed by CORS, e.g. ["https://shop.example"].'
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = Field(
        default="json", description="`cbir serve` logs: one JSON object per line (with request ids), or text."
    )

    # -- vector store (issue 12): which index/ store holds the vectors, and where Milvus is ----------------
    vector_store: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description="faiss: each process holds its own index file copy and follows the change feed; milvus: "
        "every replica shares one Milvus (CBIR_MILVUS_URI).",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus to use with CBIR_VECTOR_STORE=milvus: http://host:19530 (a server, or "
        "`milvus-lite server`), or a file path for Milvus Lite in this one process (default: "
        "DATA_DIR/milvus.db).",
    )
    milvus_collection: str = Field(
        default="cbir", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", description="The Milvus collection's name."
    )

    @property
    def milvus_target(self) -> str:
        return self.milvus_uri or str((self.data_dir / "milvus.db").resolve())

    # -- Search by image URL (POST /search {"url": ...}): off until hosts are listed -------------------------
    fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts whose images a search may fetch by URL, comma-separated (.example.com: its "
        "subdomains too); empty: search by URL is off. Loopback, private and link-local addresses are "
        "refused whatever the host resolves to.",
    )
    fetch_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest time a search spends fetching an image by URL."
    )

    @field_validator("fetch_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("encoder")
    @classmethod
    def _absolute_checkpoint(cls, value: str | None) -> str | None:
        # The collection records this setting to rebuild its encoder (app/collection/versions.py): a relative
        # checkpoint path would name another file, or none, in a process started from another directory.
        return normalise_encoder(value)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cbir.db').resolve()}"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.faiss"

    @property
    def runtime_cache_dir(self) -> Path:
        return (self.runtime_cache or self.data_dir / "runtime-cache").expanduser()

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"
