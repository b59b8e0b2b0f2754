"""Edge settings from the environment (the edge variables); documented in docs/edge.md and
docs/configuration.md.  The local DICOM node and data directory use the usual ``YILIAN_*``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.settings import env_float


@dataclass(frozen=True)
class EdgeSettings:
    centre_url: str  # the centre's API base, https://… (http:// only on loopback, for tests)
    token: str  # the edge's bearer token (a user of role ``edge`` of this organisation)
    organization: str  # the clinic this edge serves; only its modalities may store here
    ca_file: str | None = None  # CA bundle that verifies the centre's certificate (default: the system's)
    rate_kbps: float = 0.0  # bandwidth cap on the uplink in kilobits per second; 0: none
    batch_bytes: int = 4 << 20  # one STOW request carries at most this much (one larger instance alone)
    first_delay: float = 2.0  # first retry after a failure waits up to this long (full jitter)
    max_delay: float = 60.0  # no single wait longer: a link back is used within a minute
    poll_seconds: float = 1.0  # how often the local store is looked at for new studies
    heartbeat_seconds: float = 30.0
    worklist_seconds: float = 60.0  # how often the worklist copy is brought up to date (MPPS go every poll)
    probe_seconds: float = 5.0  # while the link is down, a heartbeat this often finds it back
    compress: bool = True  # gzip the STOW bodies
    # Results back: the clinic's terminal (AE@host:port; default: the organisation's scp in the consortium
    # file), and the longest wait before the result stream reconnects or a result is tried again, so a
    # result signed during an outage reaches the terminal within seconds of the link coming back.
    terminal: str | None = None
    results_max_delay: float = 10.0
    terminal_timeout: float = 30.0  # association and C-STORE timeout at the terminal

    @classmethod
    def from_env(cls) -> EdgeSettings:
        url = (os.environ.get("YILIAN_EDGE_CENTRE_URL") or "").strip()
        token = (os.environ.get("YILIAN_EDGE_TOKEN") or "").strip()
        org = (os.environ.get("YILIAN_EDGE_ORGANIZATION") or "").strip()
        missing = [n for n, v in (("YILIAN_EDGE_CENTRE_URL", url), ("YILIAN_EDGE_TOKEN", token),
                                  ("YILIAN_EDGE_ORGANIZATION", org)) if not v]
        if missing:
            raise SystemExit(f"yilian edge needs {', '.join(missing)} (see docs/edge.md)")
        if not url.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
            raise SystemExit("YILIAN_EDGE_CENTRE_URL must be https:// (plain http only to a loopback address)")
        return cls(
            centre_url=url, token=token, organization=org,
            ca_file=(os.environ.get("YILIAN_EDGE_CA_FILE") or "").strip() or None,
            rate_kbps=env_float("YILIAN_EDGE_RATE_KBPS", 0.0, minimum=0.0),
            batch_bytes=int(env_float("YILIAN_EDGE_BATCH_BYTES", float(4 << 20), minimum=65536)),
            first_delay=env_float("YILIAN_EDGE_RETRY_FIRST_SECONDS", 2.0, minimum=0.01),
            max_delay=env_float("YILIAN_EDGE_RETRY_MAX_SECONDS", 60.0, minimum=0.01),
            poll_seconds=env_float("YILIAN_EDGE_POLL_SECONDS", 1.0, minimum=0.01),
            heartbeat_seconds=env_float("YILIAN_EDGE_HEARTBEAT_SECONDS", 30.0, minimum=0.05),
            worklist_seconds=env_float("YILIAN_EDGE_WORKLIST_SECONDS", 60.0, minimum=0.05),
            probe_seconds=env_float("YILIAN_EDGE_PROBE_SECONDS", 5.0, minimum=0.05),
            compress=(os.environ.get("YILIAN_EDGE_COMPRESS") or "true").strip().lower() not in ("0", "false", "no"),
            terminal=(os.environ.get("YILIAN_EDGE_TERMINAL") or "").strip() or None,
            results_max_delay=env_float("YILIAN_EDGE_RESULTS_RETRY_MAX_SECONDS", 10.0, minimum=0.01),
            terminal_timeout=env_float("YILIAN_EDGE_TERMINAL_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        )

    @property
    def bytes_per_second(self) -> float | None:
        return self.rate_kbps * 1000 / 8 if self.rate_kbps > 0 else None
