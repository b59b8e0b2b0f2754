"""Indexing in a process of its own: the receiving processes only journal, answer and forward.

With ``YILIAN_GATEWAY_INDEXER=process`` the main gateway process starts one indexer process.
Every receiving process (the main one and its workers) answers a C-STORE once its journal
record is durable, exactly as with the in-process indexer, then forwards the record over a
local socket (:class:`IndexClient`).  The indexer process (:class:`IndexServer`) writes the
blob files and indexes the instances in batches with the same code as the in-process indexer
(:class:`~.indexer.Indexer`, :meth:`~.ingest.Ingest.index_batch`), and acknowledges each
record once its batch has committed.  Only then does the receiving process count the record
as indexed in its journal; a segment is recycled after the receiving process has synced the
blob store and the store (:meth:`~.ingest.Ingest.sync`), as before.

Why: on two cores, a process that both receives and indexes spends half its time on each, on
one core (the GIL); split, receiving and indexing run side by side (docs/performance.md).

Failure: records not yet acknowledged stay in the receiving process (and in its journal).  If
the indexer process dies, the main process starts a new one; each receiving process
reconnects and sends again every record not acknowledged — indexing is idempotent (an
identical instance is recognised).  If everything dies, the journals replay at the next start.

Wire format (little endian), one stream per receiving process:
``RECORD``: type 1, flags (1: write the blob file), sequence number (u64), meta length (u32),
body length (u32), then the journal record's meta (UTF-8 JSON, :func:`~.ingest.record_meta`)
and the Part 10 bytes (none when the meta names a staging file).  ``ACK``: type 2, count (u32), the
indexer's failure and quarantine totals (u32 each), then ``count`` sequence numbers (u64).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import secrets
import signal
import struct
from typing import TYPE_CHECKING, Any

from ..core import orphans
from .indexer import Indexer, Indexing, Waiting
from .ingest import prepared_from_record, record_meta
from .journal import encode_meta

if TYPE_CHECKING:
    from ..core.settings import Settings
    from .ingest import Ingest

log = logging.getLogger("yilian.pacs_gateway.index_process")

RECORD = struct.Struct("<BBQII")
WRITE_BLOB = 0x01  # RECORD flag: write the blob file (not set for a replayed staging file already in place)
ACK = struct.Struct("<BIII")
RECORD_TYPE, ACK_TYPE = 1, 2
READ_LIMIT = 1 << 20
RECONNECT_FIRST, RECONNECT_MAX = 0.05, 2.0
READY_TIMEOUT = 60.0
STOP_WAIT = 10.0


def new_address() -> str:
    """A Linux abstract socket name: nothing on disk, no path length limit, gone with the process."""
    return f"\0yilian-index-{os.getpid()}-{secrets.token_hex(6)}"


class IndexClient(Indexing):
    """The receiving side: forwards what this process answered; the indexer process indexes it."""

    task_name = "pacs_gateway:index-client"

    def __init__(self, ingest: Ingest, address: str) -> None:
        super().__init__(ingest)  # its backlog: forwarded (or to forward), not acknowledged, numbered as sent
        self.address = address
        self._writer: asyncio.StreamWriter | None = None

    async def submit(self, item: Waiting) -> None:
        seq = await self.backlog.add(item)
        writer = self._writer
        if writer is not None:  # else it goes when the connection is (re)made
            try:
                self._send(writer, seq, item)
                await writer.drain()
            except ConnectionError:
                pass  # the indexer process is gone: the item stays in the backlog, sent again on reconnect

    @staticmethod
    def _send(writer: asyncio.StreamWriter, seq: int, item: Waiting) -> None:
        p = item.prepared
        meta = item.meta if item.meta is not None else encode_meta(record_meta(p, item.received_at))
        body = p.received.part10() if p.received.in_memory else []
        flags = WRITE_BLOB if item.write_blob else 0
        writer.writelines([RECORD.pack(RECORD_TYPE, flags, seq, len(meta), sum(len(b) for b in body)), meta, *body])

    async def _run(self) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.address, limit=READ_LIMIT)
            except OSError as exc:
                log.warning("cannot reach the indexer process; retrying",
                            extra={"error": repr(exc), "retry_in_seconds": delay, "waiting": len(self.backlog)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            try:
                for seq, item in self.backlog.oldest(len(self.backlog)):  # what the last connection left unacknowledged
                    self._send(writer, seq, item)
                self._writer = writer
                await writer.drain()
                while True:
                    kind, count, failures, quarantined = ACK.unpack(await reader.readexactly(ACK.size))
                    if kind != ACK_TYPE:
                        raise ConnectionError(f"unexpected frame type {kind} from the indexer process")
                    seqs = struct.unpack(f"<{count}Q", await reader.readexactly(8 * count))
                    self.failures, self.quarantined = failures, quarantined
                    self.ingest.indexed(await self.backlog.remove(seqs))
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                log.warning("connection to the indexer process lost; reconnecting",
                            extra={"error": repr(exc), "waiting": len(self.backlog)})
            finally:
                self._writer = None
                writer.close()


class IndexServer:
    """The indexer process's side: records in, batches indexed, acknowledgements out."""

    def __init__(self, ingest: Ingest, address: str) -> None:
        self.ingest = ingest
        self.address = address
        self.indexer = Indexer(ingest)
        ingest.indexer = self.indexer  # index_batch/quarantine run here; there is no journal of our own
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.indexer.start()
        self._server = await asyncio.start_unix_server(self._connection, self.address, limit=READ_LIMIT)

    async def receivers_gone(self, timeout: float) -> None:
        """Until the receiving processes hung up (or ``timeout``): they do once what they
        forwarded is indexed, before their parent stops this process."""
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=timeout)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.indexer.stop()  # acknowledged below while connections last; the rest replays
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        loop = asyncio.get_running_loop()
        staging = self.ingest.rt.blobs.staging_dir()
        acks: list[int] = []

        def flush() -> None:
            if acks and not writer.is_closing():
                writer.write(ACK.pack(ACK_TYPE, len(acks), self.indexer.failures, self.indexer.quarantined)
                             + struct.pack(f"<{len(acks)}Q", *acks))
            acks.clear()

        def acknowledge(seq: int) -> None:
            if not acks:  # one frame for a whole batch
                loop.call_soon(flush)
            acks.append(seq)
        try:
            while True:
                kind, flags, seq, meta_len, body_len = RECORD.unpack(await reader.readexactly(RECORD.size))
                if kind != RECORD_TYPE:
                    raise ConnectionError(f"unexpected frame type {kind}")
                meta = json.loads(await reader.readexactly(meta_len))
                body = await reader.readexactly(body_len) if body_len else b""
                await self.indexer.submit(Waiting(prepared_from_record(meta, body, staging), meta["received_at"], None,
                                                  write_blob=bool(flags & WRITE_BLOB),
                                                  on_indexed=functools.partial(acknowledge, seq)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the receiving process stopped; what it did not get acknowledged it sends again
        except asyncio.CancelledError:
            # stop() ends the connection. Ending normally: asyncio's stream callback (3.11) logs a
            # traceback for a cancelled connection task.
            pass
        except Exception:
            log.exception("bad record from a receiving process; connection closed")
        finally:
            self._connections.discard(task)
            writer.close()


class IndexProcess:
    """The main gateway process's handle on the indexer process: start, restart if it dies, stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = new_address()
        self._ctx = multiprocessing.get_context("spawn")
        self.process: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._watch_process(), name="pacs_gateway:index-process")

    async def _spawn(self) -> None:
        ready = self._ctx.Event()
        self.process = self._ctx.Process(target=index_process_main, name="yilian-gateway-indexer", daemon=True,
                                         args=(self.settings, self.address, os.getpid(), ready))
        with orphans.spared_from_interrupt():
            self.process.start()
        if not await asyncio.to_thread(ready.wait, READY_TIMEOUT):
            self.process.kill()
            raise RuntimeError("the gateway's indexer process did not become ready "
                               f"(exit code {self.process.exitcode})")
        log.info("gateway indexer process ready", extra={"pid": self.process.pid})

    async def _watch_process(self) -> None:
        while not self._stopping:
            await asyncio.to_thread(self.process.join, 1.0)
            if self.process.is_alive() or self._stopping:
                continue
            log.error("gateway indexer process exited; starting another (receiving processes resend what it had "
                      "not indexed)", extra={"exit_code": self.process.exitcode})
            try:
                await self._spawn()
            except Exception:
                log.exception("could not restart the gateway indexer process; retrying")
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            await asyncio.to_thread(self.process.join, STOP_WAIT + 5)
            if self.process.is_alive():
                self.process.kill()
                await asyncio.to_thread(self.process.join, 5)


def index_process_main(settings: Settings, address: str, parent_pid: int, ready: Any) -> None:
    from ..core import logs
    logs.configure(settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when we stop
    asyncio.run(_serve(settings, address, parent_pid, ready))


async def _serve(settings: Settings, address: str, parent_pid: int, ready: Any) -> None:
    from ..core.runtime import build_runtime
    from .ingest import Ingest

    rt = await build_runtime(settings)
    server = IndexServer(Ingest(rt), address)
    stop = asyncio.Event()
    orphans.stop_on_sigterm(stop)
    orphans.stop_with_parent(parent_pid, stop, "gateway indexer")
    try:
        await server.start()
        ready.set()
        await stop.wait()
        # A SIGTERM to the whole process group (systemd's stop) reaches this process with its
        # parent's: keep indexing until the parent, stopping in order, hung up.
        await server.receivers_gone(STOP_WAIT)
    finally:
        await server.stop()
        await rt.blobs.close()
        await rt.store.close()
