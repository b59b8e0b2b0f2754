"""Settings from the environment (``YILIAN_*``); documented in docs/configuration.md."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONSORTIUM = Path(__file__).resolve().parents[2] / "deploy" / "consortium.example.yaml"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = (os.environ.get(name) or default).strip().lower()
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _gateway_indexer() -> str:
    """``auto`` (the default): an indexer process where there is a second core for it."""
    choice = _choice("YILIAN_GATEWAY_INDEXER", ("auto", "inline", "process"), "auto")
    if choice == "auto":
        return "process" if (os.cpu_count() or 1) >= 2 else "inline"
    return choice


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """A number from the environment (``default`` when unset or empty); a bad value stops the
    process with a message naming the variable, never a traceback."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SystemExit(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    consortium_path: Path
    store_url: str
    bus_url: str
    blob_url: str
    bind_host: str = "0.0.0.0"
    http_port: int = 8080
    dicom_port: int = 11112
    ae_title: str = "YILIAN"
    log_level: str = "INFO"
    jwt_secret: str = field(default="", repr=False)
    kafka_idempotent: bool = True
    gateway_workers: int = 1
    # "process": index in a process of its own (pacs_gateway/index_process.py); from the
    # environment the default is "process" with two cores or more (_gateway_indexer)
    gateway_indexer: str = "inline"
    study_quiet_seconds: float = 30.0
    max_instance_bytes: int = 2 * 1024**3
    # hostile data sets (pacs_gateway/bounded.py): inflated size and ratio of a deflated one, nesting
    max_inflated_bytes: int = 256 * 1024**2
    max_inflate_ratio: int = 100
    max_sequence_depth: int = 64
    gateway_inline_bytes: int = 1024**2  # instances up to this size are received in memory and journaled whole
    gateway_journal_segment_bytes: int = 32 * 1024**2
    duplicate_policy: str = "keep_first"  # or "replace"
    dicom_tls_cert: str | None = None
    dicom_tls_key: str | None = None
    dicom_tls_ca: str | None = None
    dicom_native_ul: bool = True  # asyncio upper layer for C-ECHO/C-STORE; False: pynetdicom serves all
    dicom_network_timeout: float = 60.0  # seconds a DICOM peer may stay silent (ARTIM and idle)
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, *, consortium: str | None = None) -> Settings:
        env = os.environ
        data_dir = Path(env.get("YILIAN_DATA_DIR") or "var").resolve()
        store_url = env.get("YILIAN_STORE_URL") or f"sqlite:///{data_dir / 'yilian.db'}"
        blob_default = "gridfs:" if store_url.startswith("mongodb") else f"file://{data_dir / 'blobs'}"
        return cls(
            data_dir=data_dir,
            consortium_path=Path(consortium or env.get("YILIAN_CONSORTIUM") or DEFAULT_CONSORTIUM),
            store_url=store_url,
            bus_url=env.get("YILIAN_BUS_URL") or "embedded:",
            blob_url=env.get("YILIAN_BLOB_URL") or blob_default,
            bind_host=env.get("YILIAN_BIND_HOST") or "0.0.0.0",
            http_port=_int("YILIAN_HTTP_PORT", 8080),
            dicom_port=_int("YILIAN_DICOM_PORT", 11112),
            ae_title=(env.get("YILIAN_AE_TITLE") or "YILIAN").strip(),
            log_level=(env.get("YILIAN_LOG_LEVEL") or "INFO").upper(),
            jwt_secret=env.get("YILIAN_JWT_SECRET") or "",
            kafka_idempotent=(env.get("YILIAN_KAFKA_IDEMPOTENT", "true").lower() not in ("0", "false", "no")),
            gateway_workers=_int("YILIAN_GATEWAY_WORKERS", 1),
            gateway_indexer=_gateway_indexer(),
            study_quiet_seconds=env_float("YILIAN_STUDY_QUIET_SECONDS", 30.0),
            max_instance_bytes=_int("YILIAN_MAX_INSTANCE_BYTES", 2 * 1024**3),
            max_inflated_bytes=_int("YILIAN_MAX_INFLATED_BYTES", 256 * 1024**2),
            max_inflate_ratio=_int("YILIAN_MAX_INFLATE_RATIO", 100),
            max_sequence_depth=_int("YILIAN_MAX_SEQUENCE_DEPTH", 64),
            gateway_inline_bytes=_int("YILIAN_GATEWAY_INLINE_BYTES", 1024**2),
            gateway_journal_segment_bytes=_int("YILIAN_GATEWAY_JOURNAL_SEGMENT_BYTES", 32 * 1024**2),
            duplicate_policy=env.get("YILIAN_DUPLICATE_POLICY") or "keep_first",
            dicom_tls_cert=env.get("YILIAN_DICOM_TLS_CERT") or None,
            dicom_tls_key=env.get("YILIAN_DICOM_TLS_KEY") or None,
            dicom_tls_ca=env.get("YILIAN_DICOM_TLS_CA") or None,
            dicom_native_ul=(env.get("YILIAN_DICOM_NATIVE_UL", "true").lower() not in ("0", "false", "no")),
            dicom_network_timeout=env_float("YILIAN_DICOM_NETWORK_TIMEOUT", 60.0),
            cors_origins=tuple(o.strip() for o in (env.get("YILIAN_CORS_ORIGINS") or "").split(",") if o.strip()),
        )

    def secret(self) -> str:
        """The JWT signing secret: ``YILIAN_JWT_SECRET``, else one generated once under the data dir.

        The generated file is for the embedded, single-machine default only; a scale-out
        deployment sets the variable (docker-compose.yml requires it).
        """
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt.secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        return path.read_text().strip()
