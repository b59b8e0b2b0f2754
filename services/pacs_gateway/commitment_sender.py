"""Sends the storage commitment reports the store holds, across restarts, with backoff.

The N-ACTION handler (``commitment.py``) writes one ``storage_commitments`` document per
Transaction UID before it answers.  :class:`CommitmentSender` (in the main gateway process)
claims due documents with a compare-and-set lease, as the delivery worker claims deliveries,
so a report is worked by one process at a time and a dead process's claim expires.  At send
time it decides the verdicts from the index and the blob store, opens a new association to
the requestor's SCP and sends the N-EVENT-REPORT.  A failed attempt is retried after a
full-jitter backoff (``delivery.retry.Backoff``); past the horizon the request is ``failed``.

States: ``pending`` --claim--> ``sending`` --> ``reported`` | ``pending`` (retry) | ``failed``.
A process killed while sending leaves ``sending``; the lease expires (or, on the same data
directory, the restarted process sees its holder gone: ``core/holders.py``) and the report is sent
again (at least once: a requestor may see the same report twice, never none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role

from ..core import claims, holders
from ..core.backoff import Backoff
from ..core.runtime import Runtime
from ..core.settings import env_float
from ..core.times import iso, parse_iso
from . import query as q
from .commitment import (COMMITMENTS, NO_SUCH_OBJECT_INSTANCE, STORAGE_COMMITMENT_INSTANCE,
                         STORAGE_COMMITMENT_PUSH_MODEL, event_information, report_destination, verdicts)

log = logging.getLogger("yilian.pacs_gateway.commitment")

SETTINGS_KEY = "pacs_gateway.commitment_settings"
RELEASE_WAIT = 5.0  # let the requestor release its N-ACTION association before reporting
STOP_GRACE = 5.0  # on stop, a report being sent may finish (and be recorded) this long
# An instance another gateway process (a worker, or the indexer process) acknowledged just before
# the N-ACTION may not be indexed yet: what seems missing is judged again until this long after
# the request (at most a quarter of the retry horizon).
MISSING_GRACE = 2.0
Doc = dict[str, Any]


@dataclass(frozen=True)
class CommitmentSettings:
    first_delay: float = 2.0  # the first retry waits up to this long (full jitter)
    max_delay: float = 300.0  # no single wait is longer
    horizon: float = 86400.0  # after this long without delivering the report, the request is failed
    poll_seconds: float = 1.0  # how often the store is looked at for due reports
    timeout: float = 30.0  # connection, association and DIMSE timeouts of the report association
    concurrency: int = 4  # reports in flight per process
    clock: Callable[[], float] = time.time

    @classmethod
    def from_env(cls, **overrides: Any) -> CommitmentSettings:
        values: dict[str, Any] = dict(
            first_delay=env_float("YILIAN_COMMITMENT_FIRST_DELAY_SECONDS", 2.0, minimum=0.01),
            max_delay=env_float("YILIAN_COMMITMENT_MAX_DELAY_SECONDS", 300.0, minimum=0.01),
            horizon=env_float("YILIAN_COMMITMENT_HORIZON_SECONDS", 86400.0, minimum=0.1),
            poll_seconds=env_float("YILIAN_COMMITMENT_POLL_SECONDS", 1.0, minimum=0.01),
            timeout=env_float("YILIAN_COMMITMENT_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        )
        values.update(overrides)
        return cls(**values)

    @property
    def lease_seconds(self) -> float:
        # A claim outlives the slowest attempt: the release wait, connect, associate, report, release.
        return RELEASE_WAIT + 4 * self.timeout + 1


def settings_of(rt: Runtime) -> CommitmentSettings:
    settings = rt.shared.get(SETTINGS_KEY)
    if settings is None:
        settings = rt.shared[SETTINGS_KEY] = CommitmentSettings.from_env()
    return settings


def send_report(*, calling_ae: str, destination: Doc, event_type: int, info: Dataset,
                timeout: float) -> tuple[bool, str]:
    """Blocking: one association to ``destination`` with the gateway in the SCP role, one N-EVENT-REPORT."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    where = f"{destination['ae_title']}@{destination['host']}:{destination['port']}"
    assoc = ae.associate(destination["host"], int(destination["port"]), ae_title=destination["ae_title"],
                         contexts=[build_context(STORAGE_COMMITMENT_PUSH_MODEL)],
                         ext_neg=[build_role(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=False, scp_role=True)])
    if not assoc.is_established:
        if assoc.is_rejected:
            return False, f"association rejected by {where}"
        return False, f"could not associate with {where} (connection refused or aborted)"
    try:
        status, _ = assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT_PUSH_MODEL,
                                              STORAGE_COMMITMENT_INSTANCE)
    except (ValueError, RuntimeError) as exc:  # e.g. the context or the SCP role was not accepted
        return False, f"{where} cannot take the report: {exc}"
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return False, f"no N-EVENT-REPORT response from {where} (timeout or connection lost)"
    if code != 0x0000:
        return False, f"{where} answered the report with status 0x{code:04X}"
    return True, f"reported to {where}"


async def _in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """Run blocking ``fn`` in a daemon thread: unlike ``to_thread`` it never holds up process exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def work() -> None:
        try:
            outcome = (True, fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)
    threading.Thread(target=work, name="commitment-report", daemon=True).start()
    return await future


class CommitmentSender:
    """Claims due commitment reports and sends them, at most ``concurrency`` at a time."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.rt: Runtime = gateway.rt
        self.settings = settings_of(self.rt)
        self.backoff = Backoff(self.settings.first_delay, self.settings.max_delay, self.settings.horizon)
        self.holder = holders.of(self.rt)
        self.id = self.holder.id
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self._associations: dict[str, Any] = {}  # Transaction UID -> its N-ACTION association (this process)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="pacs_gateway:commitment-sender")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.in_flight:
            # A report on the wire may finish and be recorded; the rest are taken up after restart.
            await asyncio.wait(list(self.in_flight.values()), timeout=STOP_GRACE)
        for task in list(self.in_flight.values()):
            task.cancel()
        await asyncio.gather(*self.in_flight.values(), return_exceptions=True)

    def requested(self, transaction_uid: str, assoc: Any) -> None:
        """From the N-ACTION handler's thread: a request was recorded; report once ``assoc`` is released."""
        self._associations[transaction_uid] = assoc
        self.wake()

    def wake(self) -> None:
        """Look for due reports now (thread-safe) rather than at the next poll."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the store may be down: look again at the next poll
                log.exception("storage commitment sender could not look for due reports")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()

    # --- claiming -------------------------------------------------------------------
    async def due(self) -> list[Doc]:
        return await claims.due(self.rt.store, COMMITMENTS, busy="sending", now=iso(self.settings.clock()),
                                room=self.settings.concurrency - len(self.in_flight), skip=self.in_flight,
                                gone=self.holder.gone())

    async def run_once(self) -> int:
        """Claim what is due and start sending it; how many were started."""
        started = 0
        for d in await self.due():
            claimed = await self.claim(d)
            if claimed is None:
                continue
            task = asyncio.create_task(self._attempt(claimed), name=f"commitment:{d['id'][-12:]}")
            self.in_flight[d["id"]] = task
            task.add_done_callback(lambda _t, i=d["id"]: self._done(i))
            started += 1
        return started

    def _done(self, transaction_uid: str) -> None:
        self.in_flight.pop(transaction_uid, None)
        self._wake.set()  # a slot is free

    async def claim(self, d: Doc) -> Doc | None:
        claimed = await claims.claim(self.rt.store, COMMITMENTS, d, busy="sending", worker=self.id,
                                     lease_expires_at=iso(self.settings.clock() + self.settings.lease_seconds))
        if claimed is not None and d["state"] == "sending":
            why = "lease expired" if d["lease_expires_at"] < iso(self.settings.clock()) else "holder gone"
            log.warning(f"storage commitment {why}; taking over",
                        extra={"transaction_uid": d["id"], "worker": d.get("worker")})
        return claimed  # None: another process got it first, or the requestor asked again

    # --- one attempt ----------------------------------------------------------------
    async def _await_release(self, transaction_uid: str) -> None:
        assoc = self._associations.pop(transaction_uid, None)
        deadline = time.monotonic() + RELEASE_WAIT
        while assoc is not None and assoc.is_established and time.monotonic() < deadline and not self._stopping:
            await asyncio.sleep(0.05)

    async def _attempt(self, d: Doc) -> None:
        await self._await_release(d["id"])
        rt = self.rt
        requested = [(r["sop_class_uid"], r["sop_instance_uid"]) for r in d["requested"]]
        endpoint = report_destination(rt.consortium, d["calling_ae"], d.get("organization"))
        destination = ({"ae_title": endpoint.ae_title, "host": endpoint.host, "port": endpoint.port}
                       if endpoint is not None else d["report_to"])  # the consortium may have changed since
        results: list[tuple[str, str, int | None]] = []
        try:
            organizations = q.visible_organizations(rt.consortium, d.get("organization"))
            # Instances are indexed milliseconds after their C-STORE-RSP: judge them once this
            # process's indexer has caught up with what it acknowledged.
            await self.gateway.ingest.settled()
            results = await verdicts(rt.store, rt.blobs, requested, organizations)
            grace_ends = parse_iso(d["requested_at"]) + min(MISSING_GRACE, self.settings.horizon / 4)
            while (any(reason == NO_SUCH_OBJECT_INSTANCE for *_, reason in results)
                   and self.settings.clock() < grace_ends and not self._stopping):
                await asyncio.sleep(0.1)
                results = await verdicts(rt.store, rt.blobs, requested, organizations)
            event_type, info = event_information(d["id"], results, rt.settings.ae_title)
            ok, detail = await _in_daemon_thread(lambda: send_report(
                calling_ae=rt.settings.ae_title, destination=destination, event_type=event_type, info=info,
                timeout=self.settings.timeout))
        except asyncio.CancelledError:
            raise  # stopping: the lease expires and the report is sent after restart
        except Exception as exc:  # noqa: BLE001 - the store or a bad document: retry later
            log.exception("storage commitment attempt failed unexpectedly", extra={"transaction_uid": d["id"]})
            ok, detail = False, f"internal error: {type(exc).__name__}: {exc}"
        try:
            await self.record(d, ok, detail, results, destination)
        except Exception:  # noqa: BLE001 - the store may be down: the lease expires and it is tried again
            log.exception("could not record a storage commitment outcome", extra={"transaction_uid": d["id"]})

    async def record(self, d: Doc, ok: bool, detail: str, results: list[tuple[str, str, int | None]],
                     destination: Doc) -> str:
        """Write the outcome of attempt ``attempts + 1`` (compare-and-set on the claim); the new state."""
        now = self.settings.clock()
        attempts = d["attempts"] + 1
        failed = sum(1 for *_, reason in results if reason is not None)
        changes: Doc = {"attempts": attempts, "worker": None, "lease_expires_at": None, "last_error": None,
                        "version": d["version"] + 1, "report_to": destination}
        if ok:
            changes.update(state="reported", reported_at=iso(now), next_attempt_at=None,
                           committed=len(results) - failed, failed=failed)
        else:
            at = self.backoff.next_attempt(attempt=attempts, now=now, started=parse_iso(d["requested_at"]))
            changes.update(last_error=detail, state="pending" if at is not None else "failed",
                           next_attempt_at=iso(at) if at is not None else None)
        async with self.rt.store.transaction() as tx:
            if not await tx.update(COMMITMENTS, d["id"], changes, where={"version": d["version"]}):
                log.warning("storage commitment changed while it was sent (asked again?); outcome not recorded",
                            extra={"transaction_uid": d["id"]})
                return "superseded"
        where = {"calling_ae": d["calling_ae"], "transaction_uid": d["id"], "report_to": destination["ae_title"],
                 "attempts": attempts}
        if ok:
            log.info("storage commitment reported", extra={**where, "committed": len(results) - failed,
                                                           "failed": failed})
        elif changes["state"] == "pending":
            log.warning("storage commitment report not delivered; will retry",
                        extra={**where, "error": detail, "next_attempt_at": changes["next_attempt_at"]})
        else:
            log.error("storage commitment report not delivered; gave up after the horizon",
                      extra={**where, "error": detail, "horizon_seconds": self.settings.horizon})
        return changes["state"]
