"""The HTTP API: clinics, readers, coordinators, admins; DICOMweb; live push."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.runtime import Runtime
    from .service import ApiService


def build(rt: Runtime) -> ApiService:
    # imported here: ``python -m services.api.viewer`` (make run, make test) needs none of the routes (~1.7 s)
    from .service import ApiService
    return ApiService(rt)
