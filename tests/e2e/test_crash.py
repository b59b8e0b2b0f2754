"""The crash test: ``kill -9`` ``yilian up`` in the middle of a C-STORE burst, restart, resend.

A real workload: DCMTK ``storescu`` processes send several studies at once from registered
township and village AE titles to the PACS gateway of a ``yilian up`` subprocess (embedded
default: SQLite, blob files, durable in-process bus).  The process is killed with SIGKILL
while the burst is in flight, restarted on the same data directory, and the whole burst is
sent again.  Then:

* every instance storescu got a success status for before the kill is indexed after the
  restart, before anything is resent (an acknowledged C-STORE is never lost);
* after the resend, every instance is indexed once with its blob, and the blob holds exactly
  the dataset that was sent (byte for byte);
* no index entry points at a missing blob;
* ``instance.stored`` is published once per instance, even for instances sent twice;
* each study is announced by ``study.received`` exactly once per revision, the last revision
  counting every instance;
* the consumers' effects happened exactly once: one automatic reading request per study that
  a site rule covers (and its one ``reading.requested``), none for the others;
* nothing was dead-lettered, and the restarted process stops cleanly on SIGTERM.

The process is killed a second time as soon as the first study is announced, while the
announcer and the workflow consumer are at work, so redelivery after restart is exercised too.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from services import pacs_gateway
from services.core.blobs.files import FileBlobStore
from services.core.events import registry
from services.core.store.sqlite import SqliteStore

from ..dicom_samples import DX_IMAGE, STORESCU, US_IMAGE, dataset_bytes, make_study, real_file
from ..support import wait_for

GATEWAY_IS_STUB = getattr(pacs_gateway, "_Service", None) is not None

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk, pytest.mark.timeout(240)]
if GATEWAY_IS_STUB:
    pytestmark.append(pytest.mark.xfail(
        strict=False, reason="waits for the PACS gateway's C-STORE SCP (services/pacs_gateway is still a stub)"))

QUIET_SECONDS = "1"


@dataclass
class Sender:
    """One township or village modality: its calling AE title and the studies it sends."""

    calling_ae: str
    organization: str
    modality: str
    site_rule: bool  # the example consortium creates a reading request for its studies
    studies: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return [f for files in self.studies.values() for f in files]


def defined_lengths(ds) -> None:
    """Write sequences with explicit lengths, as DCMTK's storescu re-encodes them on the wire,
    so the file on disk and the dataset sent are the same bytes."""
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = False
            for item in elem.value:
                item.is_undefined_length_sequence_item = False


def ecg_study(directory: Path, count: int) -> tuple[str, list[Path]]:
    """A study of 12-lead ECG waveforms built from pydicom's real ECG file, new UIDs each."""
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for i in range(count):
        ds = dcmread(real_file("waveform_ecg.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.InstanceNumber = f"ECG{study_uid[-6:]}", i + 1
        defined_lengths(ds)
        path = directory / f"ecg_{i:03d}_{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study_uid, files


def build_burst(root: Path) -> list[Sender]:
    senders = [
        Sender("HM_DR1", "hongmiao-thc", "DX", site_rule=True),  # site rule: imaging, DX/CR
        Sender("CG_CT1", "chengguan-thc", "CT", site_rule=False),
        Sender("DB_US1", "dongba-thc", "US", site_rule=False),
        Sender("ZZ_ECG1", "zhangzhuang-vc", "ECG", site_rule=True),  # site rule: every ECG
        Sender("LZ_ECG1", "lizhuang-vc", "ECG", site_rule=True),
    ]
    for sender in senders:
        for n in range(2):
            directory = root / sender.calling_ae / f"study{n}"
            if sender.modality == "ECG":
                uid, files = ecg_study(directory, 6)
            else:
                kw = {"DX": {"sop_class_uid": DX_IMAGE}, "US": {"sop_class_uid": US_IMAGE}}.get(sender.modality, {})
                study = make_study(directory, series=2, instances=20, modality=sender.modality, rows=64, columns=64,
                                   patient_id=f"{sender.calling_ae}-{n}", **kw)
                uid, files = study.study_uid, study.files
            sender.studies[uid] = files
    return senders


SENDING = re.compile(r"Sending file: (.+)$")
RESPONSE = re.compile(r"Received Store Response \((\w+)")


def acknowledged(log: str) -> set[Path]:
    """The files storescu received a success (or warning: stored) status for, from its ``-v`` log."""
    done, current = set(), None
    for line in log.splitlines():
        if m := SENDING.search(line):
            current = Path(m.group(1).strip())
        elif (m := RESPONSE.search(line)) and current is not None:
            if m.group(1) in ("Success", "Warning"):
                done.add(current)
            current = None
    return done


async def send(port: int, sender: Sender) -> tuple[int, str]:
    """Run DCMTK storescu for all of ``sender``'s files in one association; (exit status, log)."""
    proc = await asyncio.create_subprocess_exec(
        STORESCU, "-v", "-R", "-aet", sender.calling_ae, "-aec", "YILIAN", "127.0.0.1", str(port),
        *map(str, sender.files), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"})
    out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def db_query(db: Path, sql: str, *params) -> list[tuple]:
    """Read the running process's SQLite database (WAL: readers never block its writer)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def indexed_sop_uids(db: Path) -> set[str]:
    try:
        return {row[0] for row in db_query(db, 'SELECT id FROM "c_instances"')}
    except sqlite3.OperationalError:  # not created yet
        return set()


async def test_kill_9_mid_burst_loses_nothing_and_duplicates_nothing(tmp_path, yilian_process):
    senders = build_burst(tmp_path / "burst")
    all_files = [f for s in senders for f in s.files]
    sop_of = {f: dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in all_files}
    data_dir = tmp_path / "data"
    db = data_dir / "yilian.db"
    yl = yilian_process(data_dir, YILIAN_STUDY_QUIET_SECONDS=QUIET_SECONDS)

    # --- run 1: the burst, killed half-way -------------------------------------------------
    ready = yl.start()
    if ready.get("dicom_port") is None:
        pytest.xfail("the PACS gateway announces no DICOM listener yet")
    assert ready["dicom_port"] == yl.dicom_port
    burst = [asyncio.create_task(send(yl.dicom_port, s)) for s in senders]
    threshold = len(all_files) // 3
    started = time.monotonic()
    await wait_for(lambda: len(indexed_sop_uids(db)) >= threshold or all(t.done() for t in burst),
                   timeout=60, interval=0.01, what=f"{threshold} instances indexed")
    in_flight = sum(not t.done() for t in burst)
    yl.kill()  # kill -9: no shutdown, no flush, nothing
    killed_after = time.monotonic() - started
    results = await asyncio.gather(*burst)
    acked_run1 = set().union(*(acknowledged(log) for _, log in results))
    assert in_flight > 0, "the burst finished before the kill: make it bigger"
    assert 0 < len(acked_run1) < len(all_files), (len(acked_run1), len(all_files))

    # --- restart on the same data: everything acknowledged before the kill is there -----------
    yl.start()
    assert yl.http("/readyz")[0] == 200
    indexed_now = indexed_sop_uids(db)
    lost = sorted(str(f) for f in acked_run1 if sop_of[f] not in indexed_now)
    assert not lost, f"{len(lost)} acknowledged instances lost by the crash: {lost[:3]}"

    # --- run 2: resend the whole burst (what a modality does after a failed association) -------
    results = await asyncio.gather(*(send(yl.dicom_port, s) for s in senders))
    for (status, log), sender in zip(results, senders):
        assert status == 0, f"storescu from {sender.calling_ae} failed after restart:\n{log[-2000:]}"
        assert acknowledged(log) == set(sender.files), f"{sender.calling_ae}: not every file acknowledged"

    expected = {uid: len(files) for s in senders for uid, files in s.studies.items()}

    def announced() -> dict[str, dict]:
        last = {}
        for (envelope,) in db_query(db, "SELECT envelope FROM event_log WHERE type = 'study.received' ORDER BY seq"):
            data = json.loads(envelope)["data"]
            last[data["study_uid"]] = data
        return last

    # --- a second kill -9, as soon as studies are being announced and consumed ------------------
    def announcements() -> int:
        return db_query(db, "SELECT count(*) FROM event_log WHERE type = 'study.received'")[0][0]

    # Normally a re-opened study is announced within the quiet period; should every study have
    # been announced during the resend already, kill anyway after a while (still a crash).
    before, deadline = announcements(), time.monotonic() + 10
    while announcements() == before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    yl.kill()
    announced_at_second_kill = announcements()
    handled_at_kill = len(db_query(db, "SELECT id FROM \"c_handled_events\""))
    yl.start()

    await wait_for(lambda: all(announced().get(uid, {}).get("instance_count") == n for uid, n in expected.items()),
                   timeout=60, what="every study announced by study.received with all its instances")

    def workflow_caught_up() -> bool:
        last = db_query(db, "SELECT max(seq) FROM event_log WHERE type = 'study.received'")[0][0]
        offset = db_query(db, "SELECT seq FROM consumer_offsets WHERE grp = 'workflow'")
        return bool(offset) and offset[0][0] >= last

    await wait_for(workflow_caught_up, timeout=30, what="the workflow consumer to handle every study.received")
    assert yl.terminate(timeout=15) == 0, yl.log_tail()

    # --- the state, read with the adapters after a clean stop ----------------------------------
    store = SqliteStore(f"sqlite:///{db}", validate=registry().validate)
    blobs = FileBlobStore(f"file://{data_dir / 'blobs'}")
    await store.open()
    await blobs.open()
    try:
        instances = {doc["id"]: doc for doc in await store.find("instances")}
        assert set(instances) == set(sop_of.values()), "the index is not exactly the instances sent"
        for path in all_files:
            doc = instances[sop_of[path]]
            assert await blobs.exists(doc["blob_key"]), f"index entry without blob: {doc['id']}"
            blob = await blobs.read(doc["blob_key"])
            assert hashlib.sha256(blob).hexdigest() == doc["sha256"] and len(blob) == doc["size"]
            stored = blobs.local_path(doc["blob_key"])
            assert dataset_bytes(stored) == dataset_bytes(path), f"{path.name}: stored dataset differs"

        log, after = [], 0
        while batch := await store.read_log(after, limit=1000):
            log.extend(batch)
            after = batch[-1].seq

        def events(kind: str) -> list[dict]:
            return [row.event.data for row in log if row.event.type == kind]

        stored_events = collections.Counter(e["sop_instance_uid"] for e in events("instance.stored"))
        assert set(stored_events) == set(sop_of.values())
        assert max(stored_events.values()) == 1, [uid for uid, n in stored_events.items() if n > 1][:3]

        announcements = collections.Counter((e["study_uid"], e["revision"]) for e in events("study.received"))
        assert max(announcements.values()) == 1, "a study revision was announced twice"
        for uid, count in expected.items():
            revisions = sorted(r for (u, r) in announcements if u == uid)
            assert revisions == list(range(1, len(revisions) + 1)), (uid, revisions)
            study = await store.get("studies", uid)
            assert study["instance_count"] == count and study["revision"] == revisions[-1]

        requested = collections.Counter(e.get("study_uid") for e in events("reading.requested"))
        for sender in senders:
            for uid in sender.studies:
                requests = await store.find("reading_requests", {"study_uid": uid})
                want = 1 if sender.site_rule else 0
                assert len(requests) == want, f"{sender.calling_ae} study: {len(requests)} reading requests"
                assert requested[uid] == want
                assert all(r["organization"] == sender.organization for r in requests)
        assert await store.count("dead_letters") == 0, await store.find("dead_letters", limit=3)
    finally:
        await blobs.close()
        await store.close()
    print(f"\ncrash test: {len(all_files)} instances in {len(expected)} studies; killed after "
          f"{killed_after:.2f}s with {len(acked_run1)} acknowledged and {in_flight} associations in flight; "
          f"killed again with {announced_at_second_kill} study.received published and {handled_at_kill} events handled")
