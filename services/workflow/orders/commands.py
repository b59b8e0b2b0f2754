"""Commands of exam requests (申请管理): what a clinic (or its HIS, through the API) asks for.

Plain frozen dataclasses handed to :func:`services.workflow.service.execute`; values are
checked there (``Invalid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """A clinic asks for an exam before the scan; it is put on the Modality Worklist."""

    patient_id: str
    patient_name: str  # DICOM PN: 张^三, or Zhang^San=张^三
    kind: str  # "imaging" | "ecg"
    modality: str  # CT, DX, US, MR, ECG ...
    clinical_question: str
    requesting_physician: str
    scheduled_at: str  # ISO 8601 with an offset
    priority: str = "routine"
    sex: str | None = None  # M | F | O
    birth_date: str | None = None  # YYYYMMDD
    body_part: str | None = None
    procedure_code: str | None = None
    procedure_description: str | None = None
    green_channel: str | None = None
    signed_resident: bool = False
    remote_reading: bool = True  # a reading request is created when the exam is done
    station_ae: str | None = None  # the modality AE it is scheduled on (any of the organisation's if None)
    resident_id: str | None = None  # 居民身份证号, checked by its check digit; shown masked
    requesting_department: str | None = None  # 申请科室, printed on the report
    record_class: str | None = None  # outpatient | inpatient (or a class of retention.years): how long it is kept
    organization: str | None = None  # an admin names it; a clinic's is its own
    recognition: dict[str, Any] | None = None  # 结果互认: {reason, comment?} to repeat a recognised exam


@dataclass(frozen=True, slots=True)
class ChangeOrder:
    """Change a scheduled order before the exam; ``changes`` holds the fields of :data:`model.CHANGEABLE`."""

    order_id: str
    changes: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: str
    reason: str


Command = CreateOrder | ChangeOrder | CancelOrder
