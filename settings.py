"""The one Settings object: every deployment value comes from the environment through it.

Model and decoding hyperparameters are not here: they live in the checkpoint (model/config.py).
Read settings with `get_settings()`; tests change the environment and call `get_settings.cache_clear()`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent
SHIPPED_CHECKPOINTS = REPO_ROOT / "model" / "checkpoints"


def _default_data_dir() -> Path:
    """$XDG_DATA_HOME/s2s-service, else ~/.local/share/s2s-service."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "s2s-service"


class Settings(BaseSettings):
    """Deployment settings, each read from the environment variable named in `alias`."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # --- where state lives -------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        alias="S2S_DATA_DIR",
        description="Directory for the SQLite file, the private Redis and logs.",
    )
    database_url: str | None = Field(
        default=None, alias="DATABASE_URL", description="SQLAlchemy URL; default sqlite file in S2S_DATA_DIR."
    )
    redis_url: str | None = Field(
        default=None,
        alias="REDIS_URL",
        description="Broker and result store; unset = private Redis in S2S_DATA_DIR.",
    )

    # --- model -------------------------------------------------------------------------------
    checkpoint_dir: Path = Field(
        default=SHIPPED_CHECKPOINTS,
        alias="S2S_CHECKPOINT",
        description="A checkpoint directory, or a directory of checkpoints with models.json.",
    )
    device: str = Field(
        default="auto",
        alias="S2S_DEVICE",
        description="auto (a GPU when one is visible, else cpu), cpu or cuda:N.",
    )
    beam_size: int | None = Field(
        default=None,
        ge=1,
        le=32,
        alias="S2S_BEAM_SIZE",
        description="Beam width workers decode with; unset, each model's own default.",
    )
    n_best: int | None = Field(
        default=None,
        ge=1,
        le=32,
        alias="S2S_N_BEST",
        description="Hypotheses kept per answer (the n-best list shown and stored); unset, "
        "each model's own default.",
    )
    max_output_tokens: int | None = Field(
        default=None,
        ge=1,
        le=256,
        alias="S2S_MAX_OUTPUT_TOKENS",
        description="Longest reply or answer, in tokens; unset, each model's own default.",
    )
    output_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="float32",
        alias="S2S_OUTPUT_PRECISION",
        description="dtype of the decoder's output layer at inference: float32 (exact), bfloat16, or auto "
        "(bfloat16 on CPUs with native bf16, where single requests decode about twice as fast).",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        alias="S2S_TORCH_THREADS",
        description="torch.set_num_threads in a worker; 0 keeps torch's default.",
    )

    # --- input bounds ------------------------------------------------------------------------
    max_message_chars: int = Field(
        default=1000, ge=1, alias="S2S_MAX_MESSAGE_CHARS", description="Longest chat message accepted."
    )
    max_question_chars: int = Field(
        default=500, ge=1, alias="S2S_MAX_QUESTION_CHARS", description="Longest question accepted."
    )
    max_passage_chars: int = Field(
        default=20000, ge=1, alias="S2S_MAX_PASSAGE_CHARS", description="Longest passage accepted."
    )
    max_batch_items: int = Field(
        default=20000, ge=1, alias="S2S_MAX_BATCH_ITEMS", description="Most items in one batch QA file."
    )
    max_upload_bytes: int = Field(
        default=50_000_000,
        ge=1,
        alias="S2S_MAX_UPLOAD_BYTES",
        description="Largest batch file accepted, in bytes.",
    )
    owner_requests_per_minute: int = Field(
        default=120,
        ge=0,
        alias="S2S_OWNER_REQUESTS_PER_MINUTE",
        description="Chat messages, questions and batch files one owner (a login or a browser key) may send in any "
        "minute; 0 = no limit.",
    )
    owner_max_pending_items: int = Field(
        default=50_000,
        ge=0,
        alias="S2S_OWNER_MAX_PENDING_ITEMS",
        description="Batch items one owner may have waiting at once, over all its jobs; 0 = no limit.",
    )
    history_turns: int = Field(
        default=6, ge=1, le=50, alias="S2S_HISTORY_TURNS", description="Previous chat turns the model reads."
    )

    # --- workers -----------------------------------------------------------------------------
    microbatch_max_size: int = Field(
        default=32,
        ge=1,
        alias="S2S_MICROBATCH_MAX_SIZE",
        description="Most requests decoded in one batched model call.",
    )
    microbatch_max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        alias="S2S_MICROBATCH_MAX_WAIT_MS",
        description="Longest a batch is held open for announced requests.",
    )
    task_time_limit_s: int = Field(
        default=300,
        ge=1,
        alias="S2S_TASK_TIME_LIMIT_S",
        description="How long a task waits for its decode before failing.",
    )
    visibility_timeout_s: int = Field(
        default=3600,
        ge=1,
        alias="S2S_VISIBILITY_TIMEOUT_S",
        description="Seconds before Redis redelivers an unacknowledged task.",
    )
    batch_chunk_size: int = Field(
        default=8, ge=1, le=256, alias="S2S_BATCH_CHUNK_SIZE", description="Batch QA items per queued task."
    )
    max_task_attempts: int = Field(
        default=3,
        ge=1,
        alias="S2S_MAX_TASK_ATTEMPTS",
        description="Decodes of one request its worker did not survive before it is failed (poison guard).",
    )
    lost_request_grace_s: float = Field(
        default=30.0,
        ge=0,
        alias="S2S_LOST_REQUEST_GRACE_S",
        description="How long a pending chat reply or question may go with no message in Redis carrying it "
        "before a worker sends it again (looked for every 15 s).",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        alias="S2S_SQLITE_BUSY_TIMEOUT_MS",
        description="How long a worker's SQLite transaction waits for another "
        "process's lock before the task is retried later.",
    )
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        alias="S2S_REQUEST_TIMEOUT_S",
        description="How long `s2s ask`/`s2s chat` wait for an answer.",
    )

    # --- UI and metrics ----------------------------------------------------------------------
    ui_host: str = Field(
        default="127.0.0.1",
        alias="S2S_UI_HOST",
        description="Address the UI listens on (0.0.0.0 for every interface).",
    )
    ui_port: int = Field(default=7860, ge=1, le=65535, alias="S2S_UI_PORT", description="UI port.")
    ui_user: str | None = Field(
        default=None,
        alias="S2S_UI_USER",
        description="UI login name; unset = no login (set both or neither).",
    )
    ui_password: str | None = Field(
        default=None, alias="S2S_UI_PASSWORD", description="UI login password; placeholders are refused."
    )
    ui_concurrency: int = Field(
        default=64,
        ge=1,
        alias="S2S_UI_CONCURRENCY",
        description="UI events handled at once (waiting on the queue is cheap).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        alias="S2S_METRICS_PORT",
        description="Worker Prometheus port (one per worker on a machine); 0 = off.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        alias="S2S_METRICS_HOST",
        description="Address the worker metrics server binds to (0.0.0.0 in containers).",
    )
    ui_metrics: bool = Field(
        default=True,
        alias="S2S_UI_METRICS",
        description="Serve Prometheus metrics at /metrics on the UI port.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="S2S_LOG_LEVEL", description="Log level of every process."
    )

    @model_validator(mode="after")
    def _check_login(self) -> Settings:
        if (self.ui_user is None) != (self.ui_password is None):
            raise ValueError("set both S2S_UI_USER and S2S_UI_PASSWORD, or neither")
        if self.ui_password is not None and self.ui_password.strip() in {"", "changeme", "change-me"}:
            raise ValueError("S2S_UI_PASSWORD is empty or a placeholder; choose a real password")
        return self

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or the SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 's2s.sqlite3'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
