"""Delivery settings from the environment (the delivery and critical-result variables).

Documented in docs/configuration.md and docs/delivery.md.  Tests pass short values.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.settings import env_float

DEFAULT_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
SIGNATURES = ("embedded", "none")


@dataclass(frozen=True)
class DeliverySettings:
    first_delay: float = 5.0  # the first retry waits up to this long (full jitter)
    max_delay: float = 600.0  # no single wait is longer
    horizon: float = 86400.0  # after this long without success a delivery is dead-lettered
    lease_seconds: float = 120.0  # a worker's claim on one attempt; a dead worker's claim expires
    poll_seconds: float = 1.0  # how often the store is looked at for due work
    concurrency: int = 8  # attempts in flight per process
    dicom_timeout: float = 30.0  # association, DIMSE and network timeouts of the C-STORE SCU
    webhook_timeout: float = 10.0
    critical_ack_seconds: float = 600.0  # 危急值 must be acknowledged by a person within this
    critical_repeat_seconds: float = 600.0  # then escalate again every this long until acknowledged
    font: str = DEFAULT_FONT  # a TrueType font with CJK glyphs for the PDF
    pdf_processes: int = 1  # worker processes rendering PDFs (0: a thread of this process)
    font_cache: str | None = None  # where the font's fast subset is kept (default: <data dir>/cache)
    signature: str = "embedded"  # the report PDF's signer: "embedded" (the consortium CA under the data dir) or "none"
    tsa_url: str | None = None  # an RFC 3161 time-stamping authority: the signature then carries its token
    tsa_timeout: float = 10.0
    public_url: str | None = None  # the API's address as clinics reach it: the report PDF's QR code / verification link
    clock: Callable[[], float] = time.time

    @classmethod
    def from_env(cls, **overrides) -> DeliverySettings:
        ack = env_float("YILIAN_CRITICAL_ACK_SECONDS", 600.0, minimum=0.1)
        values = dict(
            first_delay=env_float("YILIAN_DELIVERY_FIRST_DELAY_SECONDS", 5.0, minimum=0.01),
            max_delay=env_float("YILIAN_DELIVERY_MAX_DELAY_SECONDS", 600.0, minimum=0.01),
            horizon=env_float("YILIAN_DELIVERY_HORIZON_SECONDS", 86400.0, minimum=0.1),
            lease_seconds=env_float("YILIAN_DELIVERY_LEASE_SECONDS", 120.0, minimum=0.5),
            poll_seconds=env_float("YILIAN_DELIVERY_POLL_SECONDS", 1.0, minimum=0.01),
            concurrency=int(env_float("YILIAN_DELIVERY_CONCURRENCY", 8, minimum=1)),
            dicom_timeout=env_float("YILIAN_DELIVERY_DICOM_TIMEOUT_SECONDS", 30.0, minimum=0.1),
            webhook_timeout=env_float("YILIAN_DELIVERY_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            critical_ack_seconds=ack,
            critical_repeat_seconds=env_float("YILIAN_CRITICAL_REPEAT_SECONDS", ack, minimum=0.1),
            font=os.environ.get("YILIAN_DELIVERY_FONT") or DEFAULT_FONT,
            pdf_processes=int(env_float("YILIAN_DELIVERY_PDF_PROCESSES", 1, minimum=0)),
            font_cache=os.environ.get("YILIAN_DELIVERY_FONT_CACHE") or None,
            signature=os.environ.get("YILIAN_SIGNATURE") or "embedded",
            tsa_url=os.environ.get("YILIAN_TSA_URL") or None,
            tsa_timeout=env_float("YILIAN_TSA_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            public_url=os.environ.get("YILIAN_PUBLIC_URL") or None,
        )
        values.update(overrides)
        return cls(**values)

    def now(self) -> float:
        return self.clock()

    def check(self) -> None:
        """Fail at start, not at the first report, when the PDF cannot be rendered."""
        if not Path(self.font).is_file():
            raise SystemExit(f"delivery: font {self.font!r} not found; install the Debian package "
                             "fonts-wqy-microhei or set YILIAN_DELIVERY_FONT to a TrueType font with CJK glyphs")
        if self.signature not in SIGNATURES:
            raise SystemExit(f"YILIAN_SIGNATURE must be one of {', '.join(SIGNATURES)}, got {self.signature!r}")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise SystemExit(f"YILIAN_PUBLIC_URL must be the http(s) address clinics reach the API at, "
                             f"got {self.public_url!r}")
        if self.tsa_url and not self.tsa_url.startswith(("http://", "https://")):
            raise SystemExit(f"YILIAN_TSA_URL must be an http(s) URL of an RFC 3161 time-stamping authority, "
                             f"got {self.tsa_url!r}")
