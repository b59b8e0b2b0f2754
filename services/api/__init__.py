"""The HTTP API: clinics, readers, coordinators, admins; DICOMweb; live push."""

from __future__ import annotations

from ..core.runtime import Runtime
from .service import ApiService


def build(rt: Runtime) -> ApiService:
    return ApiService(rt)
