"""Result delivery: record results from signed reports, work their deliveries, acknowledge.

* :func:`on_report_signed` / :func:`on_consultation_concluded` (consumer group ``delivery``,
  idempotent through ``first_time``) write the result and one delivery per channel in one
  transaction; the inbox delivery is delivered there and then.
* :class:`Worker` claims due deliveries with a compare-and-set lease (so one worker in the
  whole deployment works a delivery at a time; a dead worker's lease expires), attempts the
  channel outside any transaction, then records the outcome: delivered, retry at a jittered
  backoff, or dead-lettered (``result.delivery_failed``) past the horizon.
* :func:`acknowledge` (a clinic user) and the automatic acknowledgement on a successful DICOM
  store of a routine result; :func:`redrive` (a coordinator) for dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import base64
import functools
import hashlib
import logging
import os
import ssl
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp
from pydicom.dataset import Dataset

from ..core import audit, claims, holders, orphans, tls
from ..core.events import Event, new_traceparent
from ..core.localtime import LocalTime
from ..core.runtime import Runtime
from ..core.store.port import DuplicateKey, Transaction
from . import fonts, model, pdf, secrets, signing, sr
from .ca import ConsortiumCA
from .channels import Outcome, dicom, inbox, webhook
from .fonts import Fonts
from .retry import Backoff
from .settings import DeliverySettings

log = logging.getLogger("yilian.delivery")

GROUP = "delivery"
SETTINGS_KEY = "delivery.settings"
WAKE_KEY = "delivery.wake"
SYSTEM = "system:delivery"
RESULTS, DELIVERIES, SIGNED_PDFS = "results", "deliveries", "signed_pdfs"
# Read for the report document, like the gateway's "studies": the workflow's orders and template versions.
ORDERS, TEMPLATES = "orders", "report_templates"
HISTORY = 20  # attempts kept on a delivery record

Doc = dict[str, Any]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def settings_of(rt: Runtime) -> DeliverySettings:
    settings = rt.shared.get(SETTINGS_KEY)
    if settings is None:
        settings = rt.shared[SETTINGS_KEY] = DeliverySettings.from_env()
    return settings


def wake(rt: Runtime) -> None:
    """Tell this process's worker there is work now (other processes find it by polling)."""
    event = rt.shared.get(WAKE_KEY)
    if event is not None:
        event.set()


def _event(rt: Runtime, type: str, result: Doc, traceparent: str | None, **data: Any) -> Event:
    body = {"result_id": result["id"], "organization": result["organization"], "centre": result.get("centre"),
            "study_uid": result.get("study_uid"), "report_id": result.get("report_id"),
            "request_id": result.get("request_id"),
            "consultation_id": result.get("consultation_id"), "critical": result["critical"], **data}
    if result.get("source"):
        body["source"] = result["source"]  # "returned": a re-scan notice, not a report (the monitor skips it)
    return Event(type, subject=result["id"], data=body, source=rt.source("delivery"),
                 traceparent=traceparent or new_traceparent())


async def _audit(tx: Transaction, action: str, result: Doc, *, actor: str = SYSTEM, role: str = "system",
                 remote: str | None = None, traceparent: str | None = None, **detail: Any) -> None:
    await audit.record(tx, actor=actor, role=role, action=action, resource=f"result/{result['id']}",
                       organization=result["organization"], remote=remote, detail=detail,
                       traceparent=traceparent)


# --- results from events ------------------------------------------------------------------

async def on_report_signed(rt: Runtime, event: Event) -> None:
    now = settings_of(rt).now()
    await _record_result(rt, event, model.result_from_report(event.data, at=iso(now)), now)


async def on_consultation_concluded(rt: Runtime, event: Event) -> None:
    now = settings_of(rt).now()
    await _record_result(rt, event, model.result_from_consultation(event.data, at=iso(now)), now)


async def on_reading_returned(rt: Runtime, event: Event) -> None:
    """Returned for a re-scan: the clinic is told at once, by inbox (and its stream) and webhook."""
    now = settings_of(rt).now()
    reader = rt.consortium.users.get(event.data.get("reader_id") or "")
    await _record_result(rt, event, model.result_from_return(
        event.data, at=iso(now), returned_at=event.time, reader_name=reader.name if reader else
        event.data.get("reader_id") or ""), now)


async def _record_result(rt: Runtime, event: Event, result: Doc, now: float) -> None:
    settings = settings_of(rt)
    async with rt.store.transaction() as tx:
        if not await tx.first_time(GROUP, event.id) or await tx.get(RESULTS, result["id"]) is not None:
            return
        study_known = bool(result["study_uid"]) and await tx.get("studies", result["study_uid"]) is not None
        result["traceparent"] = event.traceparent
        result["delivered_at"] = result["created_at"]  # the inbox has it from now on
        if result["critical"]:
            result["ack_due_at"] = iso(now + settings.critical_ack_seconds)
        await tx.insert(RESULTS, result)
        channels = model.channels_for(rt.consortium, result, study_known=study_known)
        for channel, target in channels.items():
            d = model.new_delivery(result, channel, target, at=result["created_at"])
            if channel == "inbox":
                d.update(state="delivered", delivered_at=result["created_at"], attempts=1, next_attempt_at=None)
                tx.emit(_event(rt, "result.delivered", result, event.traceparent, delivery_id=d["id"],
                               channel="inbox", attempts=1, delivered_at=d["delivered_at"],
                               summary=inbox.summary(result, rt.local_time)))
            await tx.insert(DELIVERIES, d)
        await _audit(tx, "result.route", result, traceparent=event.traceparent, channels=sorted(channels),
                     source=result["source"], study_known=study_known)
    log.info("result recorded", extra={"result_id": result["id"], "organization": result["organization"],
                                       "channels": sorted(channels), "critical": result["critical"]})
    wake(rt)


# --- the worker -----------------------------------------------------------------------------

def _requester(result: Doc, study: Doc) -> Doc:
    """申请科室 / 申请医生 where no order says them: the report's (its reading request's, from the order
    or the study's DICOM header), else the study's Requesting Service / Physician or Referring Physician."""
    known = {"requesting_department": study.get("requesting_department"),
             "requesting_physician": study.get("requesting_physician") or study.get("referring_physician")}
    known.update({k: result[k] for k in model.REQUESTER if result.get(k)})
    return {k: v for k, v in known.items() if v}


class Worker:
    """Claims due deliveries and attempts them, at most ``concurrency`` at a time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings = settings_of(rt)
        self.holder = holders.of(rt)
        self.id = self.holder.id
        self.backoff = Backoff(self.settings.first_delay, self.settings.max_delay, self.settings.horizon)
        # A claim must outlive the slowest attempt (association + two C-STOREs), or a second
        # worker could take over a delivery that is still being sent.
        self.lease = max(self.settings.lease_seconds,
                         4 * max(self.settings.dicom_timeout, self.settings.webhook_timeout) + 1)
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.session: aiohttp.ClientSession | None = None
        self._pdf_pool: ProcessPoolExecutor | None = None
        self.fonts = Fonts(self.settings.font, Path(self.settings.font_cache or rt.settings.data_dir / "cache"))
        self.signer = signer_of(rt, self.settings)

    async def close(self) -> None:
        for task in list(self.in_flight.values()):
            task.cancel()
        await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        if self._pdf_pool is not None:
            pool, self._pdf_pool = self._pdf_pool, None
            processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
            pool.shutdown(wait=False, cancel_futures=True)
            # The interpreter's exit joins the pool, which waits for the call in progress (a first
            # start's CA and key issuing takes seconds); nothing it writes is lost to a stop (keys
            # are written to a temporary file and renamed), so end it now.  (Python 3.14 has
            # ProcessPoolExecutor.terminate_workers for this.)
            for process in processes:
                with contextlib.suppress(Exception):
                    process.terminate()

    async def due(self) -> list[Doc]:
        return await claims.due(self.rt.store, DELIVERIES, busy="delivering", now=iso(self.settings.now()),
                                room=self.settings.concurrency - len(self.in_flight), skip=self.in_flight,
                                gone=self.holder.gone())

    async def run_once(self) -> int:
        """Claim what is due and start attempting it; how many were started."""
        started = 0
        for d in await self.due():
            claimed = await self.claim(d)
            if claimed is None:
                continue
            task = asyncio.create_task(self._attempt(claimed), name=f"delivery:{d['id']}")
            self.in_flight[d["id"]] = task
            task.add_done_callback(lambda _t, i=d["id"]: self._done(i))
            started += 1
        return started

    def _done(self, delivery_id: str) -> None:
        self.in_flight.pop(delivery_id, None)
        wake(self.rt)  # a slot is free, and a quick retry may already be due

    async def claim(self, d: Doc) -> Doc | None:
        claimed = await claims.claim(self.rt.store, DELIVERIES, d, busy="delivering", worker=self.id,
                                     lease_expires_at=iso(self.settings.now() + self.lease))
        if claimed is not None and d["state"] == "delivering":
            why = "lease expired" if d["lease_expires_at"] < iso(self.settings.now()) else "holder gone"
            log.warning(f"delivery {why}; taking over", extra={"delivery_id": d["id"], "worker": d["worker"]})
        return claimed  # None: another worker got it first

    async def _attempt(self, d: Doc) -> None:
        result: Doc | None = None
        try:
            result = await self.rt.store.get(RESULTS, d["result_id"])
            if result is None:
                outcome = Outcome(False, f"result {d['result_id']} is gone", permanent=True)
            elif d["channel"] == "dicom":
                outcome = await self._dicom(result, d)
            elif d["channel"] == "webhook":
                outcome = await self._webhook(result, d)
            elif d["channel"] == "edge":
                outcome = await self._edge(result, d)
            elif d["channel"] == "document":
                study = await self.rt.store.get("studies", result["study_uid"] or "") or {}
                await self.document(result, study)
                outcome = Outcome(True, "signed PDF kept for GET /api/v1/reports/{id}/document")
            else:
                outcome = Outcome(True, "in the inbox")
        except asyncio.CancelledError:
            raise  # shutting down: the lease expires and another attempt follows
        except Exception as exc:  # noqa: BLE001 - a bug or a bad document must not stop the worker
            log.exception("delivery attempt failed unexpectedly", extra={"delivery_id": d["id"]})
            outcome = Outcome(False, f"internal error: {type(exc).__name__}: {exc}")
        try:
            await record_outcome(self.rt, d, result or {"id": d["result_id"], "organization": d["organization"],
                                                        "critical": d["critical"]}, outcome, self.backoff)
        except Exception:  # noqa: BLE001 - the store may be down: the lease expires and it is tried again
            log.exception("could not record a delivery outcome", extra={"delivery_id": d["id"]})

    async def _dicom(self, result: Doc, d: Doc) -> Outcome:
        rt, target = self.rt, d["target"]
        study = await rt.store.get("studies", result["study_uid"]) or {}
        signed, digest = await self.document(result, study)
        sr_ds, pdf_ds = await result_objects(rt, result, study=study, signed=signed, digest=digest)
        loop = asyncio.get_running_loop()

        def stored(sop_instance_uid: str) -> None:
            # From the C-STORE thread: written before the next instance goes, so a crash after
            # the SCP's Success cannot make that instance go again.
            try:
                asyncio.run_coroutine_threadsafe(record_sent(rt, d, sop_instance_uid), loop).result()
            except Exception:  # noqa: BLE001 - stopping: the outcome is not written either, it is sent again
                log.warning("accepted instance not recorded", extra={"delivery_id": d["id"]})

        return await asyncio.to_thread(
            dicom.store, [sr_ds, pdf_ds], calling_ae=rt.settings.ae_title, called_ae=target["ae_title"],
            host=target["host"], port=int(target["port"]), timeout=self.settings.dicom_timeout,
            already_sent=d.get("sent") or (), tls=self._tls() if target.get("tls") else None, stored=stored)

    def _centre_name(self, result: Doc) -> str:
        return centre_name(self.rt, result)

    async def _edge(self, result: Doc, d: Doc) -> Outcome:
        """The terminal is behind the clinic's edge: make the signed PDF now (so the edge's fetch finds
        it), then wait for the edge's acknowledgement until the horizon; without one, a dead letter."""
        horizon = self.settings.horizon
        if self.settings.now() >= parse_iso(d["started_at"]) + horizon:
            return Outcome(False, f"the clinic's edge did not store the result at its terminal within {horizon:g}s",
                           permanent=True)
        await self.document(result, await self.rt.store.get("studies", result["study_uid"] or "") or {})
        return Outcome(False, "ready for the clinic's edge (前置机) to fetch and store at its terminal", waiting=True)

    async def document(self, result: Doc, study: Doc) -> tuple[bytes, str]:
        """The result's signed PDF (made once, then kept) as the clinic gets it, by DICOM or the API."""
        org = self.rt.consortium.organizations.get(result["organization"])
        return await self.signed_pdf(result, study=study, institution=org.name if org else "",
                                     centre=self._centre_name(result), local=self.rt.local_time,
                                     layout=await self.layout(result, study))

    async def layout(self, result: Doc, study: Doc) -> pdf.Layout:
        """What the report document shows beyond the result and the study: the paper size (the centre's,
        else the consortium's), the 互认 mark, the verification URL, the order's requesting physician and
        procedure, the template's exam name and section titles."""
        consortium = self.rt.consortium
        centre = consortium.centres.get(result.get("centre") or "")
        order: Doc = {}
        accession = study.get("accession_number") or result.get("accession_number")
        if accession:
            found = await self.rt.store.find(ORDERS, {"accession_number": accession,
                                                      "organization": result["organization"]}, limit=1)
            order = found[0] if found else {}
        template = None
        if result.get("template_id") and result.get("template_version"):
            template = await self.rt.store.get(TEMPLATES, f"{result['template_id']}@{result['template_version']}")
        sections = template.get("sections") if template else None
        return pdf.Layout(
            page=(centre.report_page if centre else None) or consortium.report_page,
            verification_url=pdf.verification_url(self.settings.public_url, result.get("report_id")),
            recognition_mark=consortium.recognition_mark,
            order=_requester(result, study) | {k: order[k] for k in pdf.ORDER_FIELDS if order.get(k)},
            exam=template.get("exam") if template else None,
            sections=(sections["findings"]["title"], sections["impression"]["title"]) if sections else None)

    async def signed_pdf(self, result: Doc, *, study: Doc, institution: str, centre: str,
                         local: LocalTime, layout: pdf.Layout | None = None) -> tuple[bytes, str]:
        """The result's signed PDF and its SHA-256: made once (rendered, signed in the releasing
        reader's name) and kept, so every retry delivers the very bytes the SR names and
        ``GET /api/v1/reports/{id}/verification`` checks."""
        kept = await self.rt.store.get(SIGNED_PDFS, result["id"])
        if kept is None:
            font = self.fonts.for_text(institution, centre, *(str(v) for v in (*result.values(), *study.values())
                                                               if isinstance(v, str)), *pdf.texts(result, layout))
            signer_id = signer_of_result(result)
            data, sign_ms = await self._render(result, study=study, institution=institution, centre=centre,
                                               font=font, local=local, layout=layout, signer=self.signer,
                                               signer_id=signer_id)
            kept = {"id": result["id"], "report_id": result.get("report_id"),
                    "report_version": result.get("report_version") or 1, "organization": result["organization"],
                    "signer_id": signer_id, "signature": self.settings.signature,
                    "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                    "signed_at": iso(self.settings.now()), "sign_ms": round(sign_ms, 1),
                    "pdf_sop_instance_uid": result["pdf_sop_instance_uid"],
                    "sr_sop_instance_uid": result["sr_sop_instance_uid"], "pdf": base64.b64encode(data).decode()}
            try:
                async with self.rt.store.transaction() as tx:
                    await tx.insert(SIGNED_PDFS, kept)
                    await _audit(tx, "result.sign_pdf", result, traceparent=result.get("traceparent"),
                                 signer_id=signer_id, sha256=kept["sha256"], signature=kept["signature"])
            except DuplicateKey:  # another worker took the delivery over and signed first: its copy stands
                kept = await self.rt.store.get(SIGNED_PDFS, result["id"])
                assert kept is not None
            else:
                log.info("report PDF signed", extra={"result_id": result["id"], "signer_id": signer_id,
                                                     "sign_ms": kept["sign_ms"], "sha256": kept["sha256"]})
        return base64.b64decode(kept["pdf"]), kept["sha256"]

    async def prepare_signer(self) -> None:
        """At start: the CA and the readers' keys made (first start) and loaded in the PDF worker process,
        which this starts, then the report font parsed there (a reader's first report would otherwise wait
        for them).  Not with PDFs in a thread: keys are then made and loaded on first need."""
        if self.settings.pdf_processes <= 0:
            return
        readers = sorted(u.id for u in self.rt.consortium.users.values() if u.role == "reader")
        ready = 0
        try:
            for reader in readers:  # one key per task: a stop waits for the one being made, not for all
                ready += await self._in_pdf_process(functools.partial(signing.warm, self.signer, [reader]))
            await self._in_pdf_process(functools.partial(fonts.warm, self.fonts.for_text()))  # ~1 s, once
        except Exception:  # noqa: BLE001 - the first report issues or loads its key itself, and says why
            log.exception("could not prepare the report signing keys")
            return
        log.info("report signing keys ready", extra={"readers": ready, "signature": self.settings.signature})

    async def _render(self, result: Doc, **kw: Any) -> tuple[bytes, float]:
        """Render and sign the PDF in a worker process (it is CPU-bound: the event loop and the C-STOREs
        keep this process's core), or in a thread when ``YILIAN_DELIVERY_PDF_PROCESSES`` is 0."""
        return await self._in_pdf_process(functools.partial(pdf.render_signed, result, **kw))

    async def _in_pdf_process(self, call: Any) -> Any:
        if self.settings.pdf_processes <= 0:
            return await asyncio.to_thread(call)
        if self._pdf_pool is None:
            self._pdf_pool = ProcessPoolExecutor(self.settings.pdf_processes, mp_context=get_context("spawn"),
                                                 initializer=orphans.exit_with_parent, initargs=(os.getpid(),))
        try:
            with orphans.spared_from_interrupt():  # the pool starts its worker process in submit
                rendering = asyncio.get_running_loop().run_in_executor(self._pdf_pool, call)
            return await rendering
        except BrokenProcessPool:
            log.warning("PDF worker process died; starting a new one")
            self._pdf_pool = None
            return await asyncio.to_thread(call)

    def _tls(self) -> ssl.SSLContext:
        s = self.rt.settings
        return tls.client_context(s.dicom_tls_ca, s.dicom_tls_cert, s.dicom_tls_key)

    async def _webhook(self, result: Doc, d: Doc) -> Outcome:
        secret = secrets.webhook_secret(self.rt.settings, d["target"]["secret_env"])
        if not secret:  # a webhook added through the admin API after start, in a scale-out deployment
            return Outcome(False, f"environment variable {d['target']['secret_env']} (the webhook's HMAC secret) "
                                  "is not set", permanent=True)
        if self.session is None:
            self.session = aiohttp.ClientSession()
        document = webhook_document(result, d, self.rt.local_time)
        return await webhook.post(self.session, url=d["target"]["url"], document=document,
                                  delivery_id=d["id"], idempotency_key=d["idempotency_key"], secret=secret,
                                  timeout=self.settings.webhook_timeout)


def centre_name(rt: Runtime, result: Doc) -> str:
    """Who reports: the reading centre's name (else the organisation's)."""
    org = rt.consortium.organizations.get(result["organization"])
    centre = rt.consortium.centres.get(result.get("centre") or "")
    return centre.name if centre else (org.name if org else "")


async def result_objects(rt: Runtime, result: Doc, *, study: Doc, signed: bytes, digest: str) -> tuple[Dataset, Dataset]:
    """The result's DICOM SR and Encapsulated PDF as the clinic's terminal gets them (their UIDs are
    the result's, fixed when it was recorded): the worker C-STOREs them, the API hands them to the
    clinic's edge (``GET /api/v1/results/{id}/objects``)."""
    by_series: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for inst in await rt.store.find("instances", {"study_uid": result["study_uid"]},
                                    sort=(("series_uid", 1), ("instance_number", 1))):
        by_series[inst["series_uid"]].append((inst["sop_class_uid"], inst["id"]))
    institution = centre_name(rt, result)
    created = iso(settings_of(rt).now())
    station, local = rt.settings.ae_title, rt.local_time
    sr_ds = sr.build_sr(result, study=study, evidence=list(by_series.items()), created=created,
                        institution=institution, station=station, local=local,
                        observers=model.verifying_observers(rt.consortium, result, default_organization=institution),
                        pdf_sha256=digest)
    pdf_ds = pdf.build_pdf(result, study=study, pdf=signed, created=created, institution=institution,
                           station=station, local=local)
    return sr_ds, pdf_ds


def signer_of(rt: Runtime, settings: DeliverySettings) -> signing.Signer:
    """The report PDF's signer from the settings: the port's embedded default, or none."""
    if settings.signature == "none":
        return signing.NoSigner()
    ca = ConsortiumCA.for_data_dir(rt.settings.data_dir, organization=rt.consortium.name)
    return signing.PadesSigner(ca, names={u.id: u.name for u in rt.consortium.users.values()},
                               tsa_url=settings.tsa_url, tsa_timeout=settings.tsa_timeout,
                               location=rt.consortium.name)


def signer_of_result(result: Doc) -> str:
    """Whose key signs: the releasing reader — the reviewer (审核医生) of a two-level sign-off, else
    the reader; a consultation's lead."""
    signers = result.get("signers") or []
    reviewing = next((s["id"] for s in signers if s.get("role") == "reviewing" and s.get("id")), None)
    return reviewing or result.get("reader_id") or next((s["id"] for s in signers if s.get("id")), "") or "system"


def webhook_document(result: Doc, d: Doc, local: LocalTime) -> Doc:
    """The result as the clinic's HIS receives it; ``signed_at`` is UTC, ``signed_at_local`` the
    same instant in the consortium's zone with its offset (what a person there is shown)."""
    keys = ("organization", "centre", "source", "kind", "study_uid", "study_uids", "patient_id", "patient_name",
            "accession_number", "report_id", "consultation_id", "addendum_of", "reader_name", "signers",
            "signed_at", "findings", "impression", "critical", "critical_category", "sr_sop_instance_uid",
            "pdf_sop_instance_uid")
    if result.get("source") == "returned":  # a re-scan notice: the reason, no report and no DICOM objects
        keys = ("organization", "centre", "source", "kind", "study_uid", "patient_id", "patient_name",
                "accession_number", "request_id", "reader_name", "returned_at", "return_reason_code",
                "return_comment", "critical")
    return {"delivery_id": d["id"], "result_id": result["id"], **{k: result.get(k) for k in keys},
            "signed_at_local": local.iso(result["signed_at"]), "timezone": local.name}


async def record_sent(rt: Runtime, d: Doc, sop_instance_uid: str) -> None:
    """Record at once that the clinic's SCP accepted ``sop_instance_uid`` (``d`` is updated in place,
    so the attempt's outcome is written over this version)."""
    sent = sorted({*(d.get("sent") or []), sop_instance_uid})
    changes = {"sent": sent, "version": d["version"] + 1}
    try:
        async with rt.store.transaction() as tx:
            if not await tx.update(DELIVERIES, d["id"], changes, where={"version": d["version"]}):
                log.warning("delivery taken over by another worker; accepted instance not recorded",
                            extra={"delivery_id": d["id"], "sop_instance_uid": sop_instance_uid})
                return
    except Exception:  # noqa: BLE001 - the store may be down: the outcome records it, or it is sent again
        log.exception("could not record an accepted instance", extra={"delivery_id": d["id"]})
        return
    d.update(changes)


async def record_outcome(rt: Runtime, d: Doc, result: Doc, outcome: Outcome, backoff: Backoff, *,
                         actor: str = SYSTEM, role: str = "system", remote: str | None = None) -> bool:
    """Write one attempt's outcome, if this worker still holds the delivery (whether it did)."""
    settings = settings_of(rt)
    now = settings.now()
    at = iso(now)
    attempts = d["attempts"] + 1
    entry = {"attempt": attempts, "at": at, "ok": outcome.ok, "detail": outcome.detail[:500]}
    sent = sorted({*(d.get("sent") or []), *outcome.sent})
    changes: Doc = {"attempts": attempts, "history": [*(d.get("history") or []), entry][-HISTORY:], "sent": sent,
                    "lease_expires_at": None, "worker": None, "version": d["version"] + 1}
    tp = result.get("traceparent")
    if outcome.ok:
        changes.update(state="delivered", delivered_at=at, next_attempt_at=None, last_error=None)
    elif outcome.waiting:  # the edge acknowledges it (edge_delivered), or at the horizon it is dead-lettered
        changes.update(state="pending", next_attempt_at=iso(parse_iso(d["started_at"]) + backoff.horizon),
                       last_error=None)
    else:
        following = None if outcome.permanent else backoff.next_attempt(
            attempt=attempts, now=now, started=parse_iso(d["started_at"]))
        if following is None:
            reason = outcome.detail if outcome.permanent else \
                f"no success within the horizon of {backoff.horizon:g}s; last error: {outcome.detail}"
            changes.update(state="dead", dead_at=at, next_attempt_at=None, reason=reason, last_error=outcome.detail)
        else:
            changes.update(state="pending", next_attempt_at=iso(following), last_error=outcome.detail)
    async with rt.store.transaction() as tx:
        if not await tx.update(DELIVERIES, d["id"], changes, where={"version": d["version"]}):
            log.warning("delivery taken over by another worker; outcome dropped", extra={"delivery_id": d["id"]})
            return False
        if changes["state"] == "delivered":
            tx.emit(_event(rt, "result.delivered", result, tp, delivery_id=d["id"], channel=d["channel"],
                           attempts=attempts, delivered_at=at, target=_target_name(d)))
            await _audit(tx, "result.deliver", result, actor=actor, role=role, remote=remote, traceparent=tp,
                         channel=d["channel"], attempts=attempts, target=_target_name(d))
            if d["channel"] in ("dicom", "edge") and not result["critical"]:
                await _acknowledge(rt, tx, result["id"], actor=SYSTEM, role="system", mode="dicom_store",
                                   remote=None, note=None)
        elif changes["state"] == "dead":
            tx.emit(_event(rt, "result.delivery_failed", result, tp, delivery_id=d["id"], channel=d["channel"],
                           attempts=attempts, reason=changes["reason"], target=_target_name(d)))
            await _audit(tx, "result.dead_letter", result, traceparent=tp, channel=d["channel"], attempts=attempts,
                         reason=changes["reason"])
    level = logging.INFO if outcome.ok else logging.WARNING
    log.log(level, "delivery attempt", extra={"delivery_id": d["id"], "result_id": d["result_id"],
                                              "channel": d["channel"], "attempt": attempts, "state": changes["state"],
                                              "detail": outcome.detail, "next_attempt_at": changes.get("next_attempt_at")})
    return True


def _target_name(d: Doc) -> str:
    t = d.get("target") or {}
    if d["channel"] == "dicom":
        return f"{t.get('ae_title')}@{t.get('host')}:{t.get('port')}"
    if d["channel"] == "edge":
        return f"{t.get('ae_title')}@{t.get('host')}:{t.get('port')} via edge"
    if d["channel"] == "webhook":
        return str(t.get("url"))
    return f"inbox:{d['organization']}"


# --- acknowledgement and re-drive ----------------------------------------------------------

class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    pass


async def _acknowledge(rt: Runtime, tx: Transaction, result_id: str, *, actor: str, role: str, mode: str,
                       remote: str | None, note: str | None) -> Doc | None:
    """Acknowledge once; None if it already was."""
    result = await tx.get(RESULTS, result_id)
    if result is None:
        raise NotFound(result_id)
    if result.get("acknowledged_at"):
        return None
    at = iso(settings_of(rt).now())
    # Late: past the deadline, whether or not a sweep has escalated it yet.
    late = bool(result["critical"] and ((result.get("escalations") or 0) > 0
                                        or (result.get("ack_due_at") and at > result["ack_due_at"])))
    ack = {"by": actor, "mode": mode, "at": at, "note": note, "late": late}
    changes = {"acknowledged_at": at, "acknowledged_by": actor, "acknowledgement": ack, "ack_due_at": None,
               "version": result["version"] + 1}
    if not await tx.update(RESULTS, result_id, changes, where={"version": result["version"]}):
        raise Conflict(f"result {result_id} changed concurrently; try again")
    result = {**result, **changes}
    tx.emit(_event(rt, "result.acknowledged", result, result.get("traceparent"), acknowledged_by=actor, mode=mode,
                   acknowledged_at=at, late=late, escalations=result.get("escalations") or 0))
    await _audit(tx, "result.acknowledge", result, actor=actor, role=role, remote=remote,
                 traceparent=result.get("traceparent"), mode=mode, late=late)
    return result


async def acknowledge(rt: Runtime, result_id: str, *, actor: str, role: str, remote: str | None,
                      note: str | None = None) -> Doc:
    """A person at the clinic acknowledges; returns the result (unchanged if already acknowledged)."""
    async with rt.store.transaction() as tx:
        done = await _acknowledge(rt, tx, result_id, actor=actor, role=role, mode="person", remote=remote, note=note)
        return done or await tx.get(RESULTS, result_id)


async def edge_delivered(rt: Runtime, result_id: str, *, organization: str, actor: str, remote: str | None,
                         terminal: str, sent: list[str]) -> Doc:
    """The clinic's edge stored the result at its terminal: the edge delivery is delivered (as a DICOM
    store would be: ``result.delivered``, audited, a routine result acknowledged).  Once: a repeat
    (the edge lost the answer and asks again) changes nothing and returns the same delivery."""
    d = await rt.store.get(DELIVERIES, model.delivery_id(result_id, "edge"))
    if d is None or d["organization"] != organization:
        raise NotFound(result_id)
    if d["state"] == "delivered":
        return d
    result = await rt.store.get(RESULTS, result_id)
    if result is None:
        raise NotFound(result_id)
    settings = settings_of(rt)
    outcome = Outcome(True, f"stored at {terminal} by the clinic's edge", sent=tuple(sent))
    if not await record_outcome(rt, d, result, outcome, Backoff(settings.first_delay, settings.max_delay,
                                                                settings.horizon), actor=actor, role="edge",
                                remote=remote):
        raise Conflict(f"the delivery of result {result_id} changed concurrently; try again")
    return await rt.store.get(DELIVERIES, d["id"]) or d


async def redrive(rt: Runtime, delivery_id: str, *, actor: str, role: str, remote: str | None) -> Doc:
    """A dead letter back to pending, with a fresh horizon."""
    now = iso(settings_of(rt).now())
    async with rt.store.transaction() as tx:
        d = await tx.get(DELIVERIES, delivery_id)
        if d is None:
            raise NotFound(delivery_id)
        if d["state"] != "dead":
            raise Conflict(f"delivery {delivery_id} is {d['state']}, not dead-lettered; only dead letters are re-driven")
        changes = {"state": "pending", "next_attempt_at": now, "started_at": now, "dead_at": None, "reason": None,
                   "redrives": (d.get("redrives") or 0) + 1, "version": d["version"] + 1,
                   "history": [*(d.get("history") or []), {"redrive": True, "at": now, "by": actor,
                                                          "reason": d.get("reason")}][-HISTORY:]}
        if not await tx.update(DELIVERIES, delivery_id, changes, where={"version": d["version"]}):
            raise Conflict(f"delivery {delivery_id} changed concurrently; try again")
        result = await tx.get(RESULTS, d["result_id"]) or {"id": d["result_id"], "organization": d["organization"]}
        await _audit(tx, "result.redrive", result, actor=actor, role=role, remote=remote, delivery_id=delivery_id,
                     channel=d["channel"], previous_reason=d.get("reason"))
    wake(rt)
    return {**d, **changes}
