"""Settings from the environment (``YILIAN_*``); documented in docs/configuration.md."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .localtime import zone

DEFAULT_CONSORTIUM = Path(__file__).resolve().parents[2] / "deploy" / "consortium.example.yaml"
DEFAULT_VIEWER_DIR = Path(__file__).resolve().parents[2] / "var" / "viewer"  # services/api/viewer/install.py
SECRET_FILE = "jwt.secret"  # the generated JWT secret, under the data directory


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _positive(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, got {value}")
    return value


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


def _timezone(raw: str | None) -> str | None:
    """``YILIAN_TIMEZONE``, checked at start: a zone zoneinfo does not know stops the process."""
    if not (raw or "").strip():
        return None
    try:
        return zone(raw.strip()).key
    except ValueError as exc:
        raise SystemExit(f"YILIAN_TIMEZONE: {exc}") from None


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
    viewer_dir: Path = DEFAULT_VIEWER_DIR  # the OHIF Viewer's files, served at /viewer/
    jwt_secret: str = field(default="", repr=False)
    kafka_idempotent: bool = True
    relay_lease_seconds: float = 10.0  # a process's hold on a partition of the outbox; a dead one's expires
    gateway_workers: int = 1
    # "process": index in a process of its own (pacs_gateway/index_process.py); from the
    # environment the default is "process" with two cores or more (_gateway_indexer)
    gateway_indexer: str = "inline"
    study_quiet_seconds: float = 30.0
    max_instance_bytes: int = 2 * 1024**3
    # hostile data sets (core/bounded.py): inflated size and ratio of a deflated one, nesting
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
    # Concurrent associations per gateway process: in all, per calling AE title, per peer address
    # (one broken modality, or one clinic's router, cannot take every slot of the county's node).
    dicom_max_associations: int = 64
    dicom_max_associations_per_ae: int = 8
    dicom_max_associations_per_peer: int = 16
    cors_origins: tuple[str, ...] = ()
    timezone: str | None = None  # YILIAN_TIMEZONE: overrides the consortium file's ``timezone``
    http_tls_cert: str | None = None  # HTTPS on the api's port (PEM); the desks' cookies get Secure
    http_tls_key: str | None = None
    # the desks' sessions and sign-in throttle (docs/desks.md)
    session_idle_seconds: int = 1800
    session_max_seconds: int = 12 * 3600
    signin_free_failures: int = 5
    signin_lock_failures: int = 10
    signin_lock_seconds: int = 900

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
            viewer_dir=Path(env.get("YILIAN_VIEWER_DIR") or DEFAULT_VIEWER_DIR).resolve(),
            jwt_secret=env.get("YILIAN_JWT_SECRET") or "",
            kafka_idempotent=(env.get("YILIAN_KAFKA_IDEMPOTENT", "true").lower() not in ("0", "false", "no")),
            relay_lease_seconds=env_float("YILIAN_RELAY_LEASE_SECONDS", 10.0, minimum=0.5),
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
            dicom_max_associations=_positive("YILIAN_DICOM_MAX_ASSOCIATIONS", 64),
            dicom_max_associations_per_ae=_positive("YILIAN_DICOM_MAX_ASSOCIATIONS_PER_AE", 8),
            dicom_max_associations_per_peer=_positive("YILIAN_DICOM_MAX_ASSOCIATIONS_PER_PEER", 16),
            cors_origins=tuple(o.strip() for o in (env.get("YILIAN_CORS_ORIGINS") or "").split(",") if o.strip()),
            timezone=_timezone(env.get("YILIAN_TIMEZONE")),
            http_tls_cert=env.get("YILIAN_HTTP_TLS_CERT") or None,
            http_tls_key=env.get("YILIAN_HTTP_TLS_KEY") or None,
            session_idle_seconds=_positive("YILIAN_SESSION_IDLE_SECONDS", 1800),
            session_max_seconds=_positive("YILIAN_SESSION_MAX_SECONDS", 12 * 3600),
            signin_free_failures=_positive("YILIAN_SIGNIN_FREE_FAILURES", 5),
            signin_lock_failures=_positive("YILIAN_SIGNIN_LOCK_FAILURES", 10),
            signin_lock_seconds=_positive("YILIAN_SIGNIN_LOCK_SECONDS", 900),
        )

    def secret(self, *, create: bool = False) -> str:
        """The JWT signing secret, found by one rule for the server and ``yilian token``:
        ``YILIAN_JWT_SECRET`` if set, else the file ``$YILIAN_DATA_DIR/jwt.secret``.

        Only a server passes ``create``: it writes that file (mode 0600) at its first start. A
        command that issues tokens must find the running server's secret, so it refuses (naming
        where it looked) rather than invent a second one every request would then fail against.
        The file is for the embedded, single-machine default; a scale-out deployment sets the
        variable (docker-compose.yml requires it).
        """
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / SECRET_FILE
        if create:
            return generated_secret(path)
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            secret = ""
        if not secret:
            raise SystemExit(
                f"no token signing secret: YILIAN_JWT_SECRET is not set and {path} does not exist or is empty. "
                f"`yilian up` writes {SECRET_FILE} into its data directory at start: run this with the running "
                "server's YILIAN_DATA_DIR (the default is ./var of the directory it was started in), or set "
                "YILIAN_JWT_SECRET to the server's secret")
        return secret

    @property
    def embedded(self) -> bool:
        """The one-machine default (SQLite store): secrets may be generated under the data dir."""
        return self.store_url.startswith("sqlite:")


def generated_secret(path: Path) -> str:
    """A random secret kept in ``path`` (mode 0600), created the first time it is asked for."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of this machine made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
