"""Every collection Yilian keeps, and the indexes its queries need.

One declaration for both adapters: SQLite builds expression indexes from it, MongoDB
``create_index`` calls.  A service adding a collection adds it here.
"""

from __future__ import annotations

from .port import Index

COLLECTIONS: dict[str, tuple[Index, ...]] = {
    # core
    "config": (),
    "handled_events": (Index(("group",)),),
    "dead_letters": (Index(("group",)), Index(("type",))),
    "audit": (Index(("time",)), Index(("actor",)), Index(("resource",)), Index(("organization",)),
              Index(("seq",))),
    # the audit trail's hash chain: one document, "head" (last seq and hash; services/core/audit.py)
    "audit_chain": (),
    # sealed (封存) patients' frozen copies: manifest, report copies, state (services/core/sealing.py)
    "seals": (Index(("organization", "patient_id", "state")), Index(("state", "sealed_at"))),
    "revoked_tokens": (),
    # the desks (docs/desks.md): users' passwords (argon2id) and changes made by an admin, browser
    # sessions (id = SHA-256 of the cookie's session id), failed sign-ins by user name (the throttle)
    "users": (),
    "sessions": (Index(("user",)),),
    "signin_attempts": (),
    # the outbox relay's lease of each partition (event source) of the outbox (core/bus/relay.py)
    "outbox_leases": (),
    # pacs_gateway: the DICOM information model (PS3.4 C.6 Patient / Study / Series / Instance)
    "patients": (Index(("organization", "patient_id")), Index(("identity",))),
    "studies": (Index(("organization",)), Index(("patient_id",)), Index(("study_date",)),
                Index(("state", "last_update_at")), Index(("identity",))),
    # confirmed links between two organisations' patients, one document each way (api/routes/identity.py)
    "identity_links": (Index(("patient",)),),
    "series": (Index(("study_uid",)),),
    "instances": (Index(("study_uid",)), Index(("series_uid",))),
    # pacs_gateway: C-STOREs refused and instances quarantined, for the sender's clinic (refusals.py)
    "gateway_refusals": (Index(("organization", "at")), Index(("at",))),
    # pacs_gateway: storage commitment requests, id = Transaction UID; reports still to send are due by time
    "storage_commitments": (Index(("state", "next_attempt_at")), Index(("state", "lease_expires_at"))),
    # workflow: reading requests (the worklist) and reports
    "reading_requests": (Index(("centre", "state")), Index(("organization", "state")), Index(("study_uid",)),
                         Index(("state", "lease_expires_at")), Index(("state", "deadline")),
                         # the worklist: one centre's open tasks in priority/boost/deadline order
                         Index(("centre", "on_worklist", "priority_rank", "boost_rank", "deadline", "requested_at")),
                         # the worklist filtered by origin or modality (sparse filters would scan the centre)
                         Index(("centre", "on_worklist", "organization", "priority_rank", "boost_rank", "deadline",
                                "requested_at")),
                         Index(("centre", "on_worklist", "modality", "priority_rank", "boost_rank", "deadline",
                                "requested_at")),
                         Index(("organization", "requested_at")), Index(("state", "sla_risk_at"))),
    "reports": (Index(("request_id",)), Index(("study_uid",)), Index(("organization",)),
                Index(("centre", "signed_at"))),
    # workflow: every version of a request's report (id ``{request}:{seq}``, never updated) and the
    # report templates (id ``{template}@{version}``, one immutable document per version)
    "report_versions": (Index(("request_id", "seq")),),
    "report_templates": (Index(("template_id", "version")), Index(("kind",))),
    # workflow: remote consultation (远程会诊); bookings hold specialists' time, one document per
    # (specialist, 5-minute cell) with a unique id, so double-booking fails atomically
    "consultations": (Index(("organization", "requested_at")), Index(("centre", "requested_at")),
                      Index(("state", "slot_start")), Index(("state", "slot_end"))),
    "consultation_notes": (Index(("consultation_id", "seq")),),
    "consultation_invitations": (Index(("specialist", "slot_start")), Index(("consultation_id",))),
    "bookings": (Index(("consultation_id",)), Index(("specialist", "cell"))),
    # workflow: image quality (影像质控), the latest grading of each reading (id = reading request id),
    # and peer review of released reports (id ``pr-<report id>``; services/workflow/quality)
    "quality_gradings": (Index(("organization", "graded_at")), Index(("graded_at",))),
    "peer_reviews": (Index(("original_centre", "state")), Index(("original_reader",)), Index(("state",)),
                     Index(("reviewer",))),
    # workflow: duty rosters (排班管理), one document per shift (services/workflow/rosters.py)
    "shifts": (Index(("centre", "start")), Index(("start",))),
    # workflow: two-way referral (双向转诊); slots reserved by upper hospitals (one document each, booked
    # by a conditional update), and one row per attached study for the receiving hospital's scope
    "referrals": (Index(("organization", "requested_at")), Index(("target_organization", "requested_at")),
                  Index(("state", "requested_at"))),
    "referral_slots": (Index(("organization", "department", "start")), Index(("state", "release_at"))),
    "referral_studies": (Index(("study_uid", "target_organization")),),
    # 结果互认: each decision on a request held for a recognised prior (services/workflow/referral/recognition.py)
    "recognition_decisions": (Index(("organization", "at")), Index(("identity",))),
    # workflow: exam requests (申请管理) and their Modality Worklist items (services/workflow/orders)
    "orders": (Index(("accession_number",), unique=True), Index(("organization", "created_at")),
               Index(("organization", "state", "scheduled_at")), Index(("organization", "scheduled_step_id")),
               Index(("study_instance_uid",)),
               # the worklist: one organisation's scheduled items by scheduled date (PS3.4 K)
               Index(("organization", "on_worklist", "scheduled_date")),
               # an edge's worklist copy: its organisation's orders changed since its cursor (api/routes/edge_worklist.py)
               Index(("organization", "updated_at"))),
    # pacs_gateway: Modality Performed Procedure Steps (PS3.4 F), id = the MPPS SOP Instance UID
    "performed_procedure_steps": (Index(("organization",)),),
    # edges (前置机): studies held from study.received until their edge completes them (core/held_studies.py),
    # and each edge's last heartbeat (api/routes/edge.py)
    "held_studies": (Index(("organization",)),),
    "edge_heartbeats": (Index(("organization",)),),
    # the edge's own forward queue, one document per local study (services/edge/outbox.py)
    "edge_studies": (Index(("state", "next_attempt_at")),),
    "edge_state": (),
    # the edge's results for the clinic's terminal, one document per result (services/edge/results.py)
    "edge_results": (Index(("state", "next_attempt_at")),),
    # the edge's MPPS queue: each local MPPS's latest status until the centre acknowledged it (services/edge/worklist.py)
    "edge_steps": (Index(("pending", "queued_at")),),
    # monitor: its read model, fed only by events (services/monitor/readmodel.py)
    "monitor_requests": (Index(("centre", "state")), Index(("state",)), Index(("centre", "signed_at")),
                         Index(("organization", "state")), Index(("signed_at",)), Index(("overflow_to",)),
                         Index(("overflow_from",)), Index(("centre", "closed_at"))),
    "monitor_studies": (Index(("organization", "received")),),
    "monitor_results": (Index(("centre", "dead_lettered")), Index(("centre", "critical_unacknowledged")),
                        Index(("organization",))),
    "monitor_totals": (),
    "monitor_meta": (),
    # monitor: the consortium's figures and settlement (services/monitor/facts.py), fed only by events
    "figures_consultations": (Index(("organization", "requested_at")), Index(("concluded_at",))),
    "figures_gradings": (Index(("organization", "graded_at")), Index(("graded_at",))),
    "figures_reviews": (Index(("original_reader",)), Index(("sampled_at",))),
    "settlement_ledger": (Index(("posted_month", "requesting", "reading")), Index(("report_id",)),
                          Index(("month",))),
    "settlement_months": (),
    # delivery: results back to the clinic, one delivery per (result, channel)
    "results": (Index(("organization", "signed_at")), Index(("organization", "acknowledged_at")),
                Index(("critical", "ack_due_at")), Index(("study_uid",))),
    "deliveries": (Index(("state", "next_attempt_at")), Index(("state", "lease_expires_at")),
                   Index(("result_id",)), Index(("centre", "state")), Index(("organization", "state"))),
    # delivery: the signed report PDF, made once per result (id = result id) and kept as delivered
    "signed_pdfs": (),
}


def indexes(collection: str) -> tuple[Index, ...]:
    return COLLECTIONS.get(collection, ())
