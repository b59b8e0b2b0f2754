"""The pacs_gateway service: the DICOM node township modalities and workstations talk to."""

from __future__ import annotations

from ..core.runtime import Runtime
from .service import GatewayService


def build(rt: Runtime) -> GatewayService:
    return GatewayService(rt)
