"""Edge benchmark (issue 16): one 1,000-instance study to the centre over the same emulated poor
link, three ways, each timed until the centre holds every instance, with the bytes on the wire.

* ``edge``: DCMTK ``storescu`` → ``yilian edge`` (loopback, local speed) → link → centre STOW-RS.
* ``storescu``: ``storescu`` straight to the centre's gateway through the link, with a technician's
  resend loop: when an association fails he sends again what ``storescu`` did not see acknowledged
  (``--resend missing``, the default) or the whole study (``--resend whole``).
* ``orthanc``: ``storescu`` → a local Orthanc with the DICOMweb plugin (Debian ``orthanc-dicomweb``)
  whose STOW-RS client sends the study to the centre's ``/dicomweb`` through the link (one chunked
  request for the whole study); when the job fails, a new job sends the whole study again
  (resubmitting the failed job does not work: the job does not rewind, it sends an empty body).

The centre is one ``yilian up`` (embedded default, the example consortium) shared by the three;
each variant has its own link (a ``tests/edge/faultproxy.py`` proxy with the same settings and
seed) and its own copy of the study (new UIDs), so the centre's counts are per variant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydicom import dcmread
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, generate_uid

from services.core.auth import issue_token
from services.core.consortium import load_consortium
from tests.edge.faultproxy import FaultProxy

from . import corpus, peers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "consortium.example.yaml"
OUT = Path(__file__).resolve().parent / "out"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian orthanc-dicomweb
JWT = "bench-edge-secret-" + "x" * 32
MODALITY, EDGE_AE, CENTRE_AE, ORGANIZATION = "CG_CT1", "CG_EDGE", "YILIAN", "chengguan-thc"
VARIANTS = ("edge", "storescu", "orthanc")


@dataclass(frozen=True)
class LinkSettings:
    latency: float  # seconds added to every chunk, in each direction
    mbit_per_s: float  # link-wide cap, both directions together
    cut_mean_seconds: float  # the line drops at random moments, this far apart on average
    seed: int

    def describe(self) -> str:
        return (f"{self.latency * 1000:.0f} ms added each way ({2 * self.latency * 1000:.0f} ms round trip), "
                f"{self.mbit_per_s:g} Mbit/s shared by both directions, the line dropped at random moments "
                f"(exponential gaps, mean {self.cut_mean_seconds:g} s: every open connection cut), seed {self.seed}")


class Link:
    """The emulated township link in front of one centre port: the fault proxy on its own event loop.
    Its random drops start, and its byte counts are taken, from ``begin()`` (the variant's start)."""

    def __init__(self, upstream_port: int, s: LinkSettings) -> None:
        self.settings = s
        self.proxy = FaultProxy(upstream_port, latency=s.latency, bytes_per_second=s.mbit_per_s * 1e6 / 8)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="faultproxy", daemon=True)
        self.base = {"up": 0, "down": 0, "connections": 0}

    def __enter__(self) -> Link:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.proxy.port

    def begin(self) -> None:
        p = self.proxy
        self.base = {**p.bytes, "connections": p.connections}
        if self.settings.cut_mean_seconds:  # the same drop schedule for every variant, from its start
            self.loop.call_soon_threadsafe(p.drop_at_random, self.settings.cut_mean_seconds, self.settings.seed)

    def counters(self) -> dict[str, int]:
        p, b = self.proxy, self.base
        up, down = p.bytes["up"] - b["up"], p.bytes["down"] - b["down"]
        return {"bytes_up": up, "bytes_down": down, "wire_bytes": up + down,
                "connections": p.connections - b["connections"], "drops": p.drops, "connections_cut": p.cuts}


# --- the study -------------------------------------------------------------------------------
def build_study(root: Path, *, instances: int, ct_rows: int, dx: int, dx_rows: int, ecg: int) -> list[Path]:
    """One study of ``instances`` instances: ``dx`` DX images, ``ecg`` 12-lead ECGs, the rest small
    CT slices (12-bit noise: barely compressible, the conservative case for gzip)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(16)
    study, ct_series, dx_series, ecg_series = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    patient = ("E0016", "ZHAO^LIU")
    files = []
    for i in range(instances - dx - ecg):
        files.append(root / f"ct{i:04d}.dcm")
        corpus._image(files[-1], sop_class=CTImageStorage, modality="CT", study=study, series=ct_series,
                      number=i + 1, rows=ct_rows, cols=ct_rows, patient=patient, rng=rng)
    for i in range(dx):
        files.append(root / f"dx{i:02d}.dcm")
        corpus._image(files[-1], sop_class=DigitalXRayImageStorageForPresentation, modality="DX", study=study,
                      series=dx_series, number=i + 1, rows=dx_rows, cols=dx_rows, patient=patient, rng=rng)
    for i in range(ecg):
        files.append(root / f"ecg{i:02d}.dcm")
        corpus._ecg(files[-1], study, ecg_series, i + 1)
        ds = dcmread(files[-1])
        ds.PatientID, ds.PatientName = patient  # one patient: Orthanc keys a study by patient and UID
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def study_uid(files: list[Path]) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


# --- the centre --------------------------------------------------------------------------------
class Centre:
    def __init__(self, data: Path, http_port: int, dicom_port: int) -> None:
        self.db, self.http_port, self.dicom_port = data / "yilian.db", http_port, dicom_port
        consortium = load_consortium(EXAMPLE)
        self.tokens = {u: issue_token(consortium, u, JWT, ttl=86400) for u in ("cg-edge", "cg-clinic")}

    def _one(self, sql: str, *args: Any) -> int:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql, args).fetchone()[0]
        finally:
            con.close()

    def held(self, uid: str) -> int:
        return self._one("SELECT count(*) FROM c_instances WHERE json_extract(doc, '$.study_uid') = ?", uid)

    def received(self, uid: str) -> int:
        return self._one("SELECT count(*) FROM event_log WHERE type = 'study.received' "
                         "AND json_extract(envelope, '$.data.study_uid') = ?", uid)

    def first_received_at(self, uid: str) -> float | None:
        """When the first ``study.received`` of ``uid`` was emitted (epoch seconds, from the event)."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("SELECT min(json_extract(envelope, '$.time')) FROM event_log WHERE type = "
                              "'study.received' AND json_extract(envelope, '$.data.study_uid') = ?", (uid,)).fetchone()
        finally:
            con.close()
        return datetime.fromisoformat(row[0].replace("Z", "+00:00")).timestamp() if row and row[0] else None


class Process:
    """A server started in the background; ``ready()`` waits for its ready line (or port)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, *, ports: tuple[int, ...] = (),
                 ready_line: bool = True) -> None:
        self.log = open(log_path, "w")
        self.log_path, self.ports, self.ready_line = log_path, ports, ready_line
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE if ready_line else self.log,
                                     stderr=self.log, text=True)
        self.info: dict[str, Any] = {}

    def ready(self, timeout: float = 120) -> None:
        if self.ready_line:
            line = self.proc.stdout.readline()
            if not line.startswith("{"):
                raise RuntimeError(f"{self.proc.args[:4]} did not start: {line!r}; see {self.log_path}")
            self.info = json.loads(line)
        peers._wait(lambda: all(peers._listening(port) for port in self.ports), timeout, str(self.log_path),
                    self.proc)

    def stop(self) -> None:
        peers._stop(self.proc)
        self.log.close()


def _env(**values: Any) -> dict[str, str]:
    return {**{k: v for k, v in peers.ENV.items() if not k.startswith("YILIAN_")},
            **{f"YILIAN_{k.upper()}": str(v) for k, v in values.items()}}


def start_centre(work: Path, quiet: float) -> tuple[Centre, Process]:
    http, dicom = peers.free_port(), peers.free_port()
    env = _env(data_dir=work / "centre", http_port=http, dicom_port=dicom, bind_host="127.0.0.1",
               consortium=EXAMPLE, jwt_secret=JWT, log_level="WARNING", study_quiet_seconds=quiet,
               # no extra processes: the link is the bottleneck, and starting them is slow on a loaded box
               gateway_indexer="inline", delivery_pdf_processes=0)
    proc = Process([sys.executable, "-m", "services.cli", "up"], env, work / "centre.log", ports=(http, dicom))
    return Centre(work / "centre", http, dicom), proc


def start_edge(work: Path, link: Link, c: Centre, args: argparse.Namespace) -> Process:
    dicom = peers.free_port()
    env = _env(data_dir=work / "edge", ae_title=EDGE_AE, dicom_port=dicom, http_port=peers.free_port(),
               bind_host="127.0.0.1", consortium=EXAMPLE, jwt_secret="edge-local-" + "y" * 32, log_level="WARNING",
               study_quiet_seconds=args.quiet, gateway_indexer="inline",
               edge_centre_url=f"http://127.0.0.1:{link.port}",
               edge_token=c.tokens["cg-edge"], edge_organization=ORGANIZATION, edge_poll_seconds=args.edge_poll,
               edge_retry_first_seconds=args.edge_retry[0], edge_retry_max_seconds=args.edge_retry[1])
    return Process([sys.executable, "-m", "services.cli", "edge"], env, work / "edge.log", ports=(dicom,))


def start_orthanc(work: Path, link: Link, c: Centre) -> Process:
    """The clinic's Orthanc with the DICOMweb plugin, its STOW-RS client pointed at the centre through
    the link.  With the clinic's own token: with the edge's, the centre would hold the study for an
    edge's 'complete' call that Orthanc never makes (docs/edge.md, complete studies only)."""
    base = work / "orthanc"
    base.mkdir(parents=True)
    port, http = peers.free_port(), peers.free_port()
    config = {
        "Name": "clinic", "StorageDirectory": str(base / "db"), "IndexDirectory": str(base / "db"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "StorageCompression": False,
        "DicomAlwaysAllowStore": True, "HttpServerEnabled": True, "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                     "Servers": {"centre": {"Url": f"http://127.0.0.1:{link.port}/dicomweb/",
                                            "HttpHeaders": {"Authorization": f"Bearer {c.tokens['cg-clinic']}"}}}},
    }
    (base / "orthanc.json").write_text(json.dumps(config))
    proc = Process([peers.ORTHANC, "--verbose", str(base / "orthanc.json")], peers.ENV, work / "orthanc.log",
                   ports=(port, http), ready_line=False)
    proc.info = {"dicom_port": port, "api": f"http://127.0.0.1:{http}"}
    return proc


# --- the senders --------------------------------------------------------------------------------
@dataclass
class Sent:
    ok: bool
    acknowledged: int  # C-STORE-RSP Success, in the order of the files
    requests: int  # C-STORE-RQ sent
    seconds: float
    error: str


def storescu(port: int, called_ae: str, files: list[Path], timeout: float = 3600) -> Sent:
    started = time.monotonic()
    run = subprocess.run([peers.STORESCU, "-v", "-aet", MODALITY, "-aec", called_ae, "127.0.0.1", str(port),
                          *map(str, files)], env=peers.ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=timeout)
    out = run.stdout
    acknowledged = len(re.findall(r"Received Store Response \(Success\)", out))
    errors = [line for line in out.splitlines() if line.startswith(("E:", "F:"))]
    return Sent(run.returncode == 0 and acknowledged == len(files), acknowledged,
                len(re.findall(r"Sending Store Request", out)), time.monotonic() - started,
                " / ".join(errors[:3])[:300])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic()


def _announced(c: Centre, uid: str, started: float, held_seconds: float | None, timeout: float,
               settle: float) -> dict[str, Any]:
    """When the first ``study.received`` came (seconds after ``started``, epoch), how many came, and
    whether the first came before the centre held every instance (a partial study announced)."""
    try:
        wait_until(lambda: c.received(uid) >= 1, timeout, "study.received")
    except TimeoutError:
        return {"received_seconds": None, "study_received": 0, "announced_partial": False}
    time.sleep(settle)  # a second announcement would show here
    first = c.first_received_at(uid)
    seconds = first - started if first else None
    return {"received_seconds": seconds, "study_received": c.received(uid),
            "announced_partial": bool(seconds is not None and held_seconds is not None and seconds < held_seconds)}


def via_edge(c: Centre, files: list[Path], link: Link, proc: Process, args: argparse.Namespace) -> dict:
    uid, n = study_uid(files), len(files)
    link.begin()
    t0, wall0 = time.monotonic(), time.time()
    sent = storescu(proc.info["dicom_port"], EDGE_AE, files)
    if not sent.ok:
        raise RuntimeError(f"storescu to the local edge failed: {sent.error}")
    modality = time.monotonic() - t0
    held_at = wait_until(lambda: c.held(uid) >= n, args.timeout, f"{n} instances via the edge")
    link_counters = link.counters()  # what it took to get them there (a heartbeat may add a little later)
    announced = _announced(c, uid, wall0, held_at - t0, args.quiet * 2 + 120, args.settle)
    return {"seconds": held_at - t0, "modality_seconds": modality, **announced,
            "attempts": None, "failures": None, "resent": None, "held": c.held(uid), **link_counters}


def via_storescu(c: Centre, files: list[Path], link: Link, proc: None, args: argparse.Namespace) -> dict:
    uid, n = study_uid(files), len(files)
    attempts = failures = requests = 0
    errors: list[str] = []
    link.begin()
    t0, wall0 = time.monotonic(), time.time()
    pending = list(files)
    while pending and attempts < args.max_attempts:
        if attempts:
            time.sleep(args.resend_delay)  # the technician notices the failure, then sends again
        attempts += 1
        sent = storescu(link.port, CENTRE_AE, pending)
        requests += sent.requests
        if sent.ok:
            pending = []
        else:
            failures += 1
            errors.append(sent.error)
            # what storescu did not see acknowledged (its log shows it), or the whole study
            pending = pending[sent.acknowledged:] if args.resend == "missing" else list(files)
    finished = not pending
    held_at = wait_until(lambda: c.held(uid) >= n, 120, f"{n} instances via storescu") if finished else None
    link_counters = link.counters()
    seconds = held_at - t0 if held_at else None
    announced = _announced(c, uid, wall0, seconds, args.quiet * 2 + 30, args.settle)
    return {"seconds": seconds, "modality_seconds": seconds, **announced,
            "attempts": attempts, "failures": failures, "resent": requests - n, "held": c.held(uid),
            "errors": errors[:5], "not_finished": None if finished else f"gave up after {attempts} attempts",
            **link_counters}


def _http(method: str, url: str, body: dict | None = None) -> Any:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def via_orthanc(c: Centre, files: list[Path], link: Link, proc: Process, args: argparse.Namespace) -> dict:
    uid, n = study_uid(files), len(files)
    attempts = failures = 0
    errors: list[str] = []
    api = proc.info["api"]
    link.begin()
    t0, wall0 = time.monotonic(), time.time()
    sent = storescu(proc.info["dicom_port"], "ORTHANC", files)
    if not sent.ok:
        raise RuntimeError(f"storescu to the local Orthanc failed: {sent.error}")
    modality = time.monotonic() - t0
    (study,) = _http("GET", f"{api}/studies")

    def stow() -> str:
        # A failed job cannot be resubmitted usefully: the plugin's job does not rewind, so
        # POST /jobs/{id}/resubmit sends an empty body (400).  Each retry is a new job for the study.
        return _http("POST", f"{api}/dicom-web/servers/centre/stow", {"Resources": [study], "Synchronous": False})["ID"]
    job, attempts = stow(), 1
    deadline = t0 + args.timeout
    while time.monotonic() < deadline:
        state = _http("GET", f"{api}/jobs/{job}")
        if state["State"] == "Success" and c.held(uid) >= n:
            break
        if state["State"] in ("Success", "Failure"):
            failures += 1
            errors.append(str(state.get("ErrorDescription") or "success, yet the centre lacks instances")[:200])
            if attempts >= args.max_attempts:
                break
            time.sleep(args.orthanc_retry)
            job, attempts = stow(), attempts + 1
        else:
            time.sleep(0.1)
    finished = c.held(uid) >= n
    held_at = time.monotonic()
    link_counters = link.counters()
    seconds = held_at - t0 if finished else None
    announced = _announced(c, uid, wall0, seconds, args.quiet * 2 + 30, args.settle)
    return {"seconds": seconds, "modality_seconds": modality, **announced,
            "attempts": attempts, "failures": failures, "resent": None, "held": c.held(uid), "errors": errors[:5],
            "not_finished": None if finished else f"{c.held(uid)}/{n} at the centre after {attempts} jobs",
            **link_counters}


RUNNERS = {"edge": via_edge, "storescu": via_storescu, "orthanc": via_orthanc}


# --- main ---------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def table(results: dict[str, Any]) -> str:
    rows = [f"  {'variant':<10}{'at centre s':>12}{'modality s':>11}{'received s':>11}{'announced':>10}"
            f"{'attempts':>9}{'failed':>7}{'resent':>7}{'wire MB':>9}{'up MB':>8}{'down MB':>8}{'cut':>5}"]
    for name, r in results["variants"].items():
        if "skipped" in r:
            rows.append(f"  {name:<10}skipped: {r['skipped']}")
            continue
        announced = f"{r['study_received']}{'*' if r['announced_partial'] else ''}"
        rows.append(f"  {name:<10}{_fmt(r['seconds']):>12}{_fmt(r['modality_seconds']):>11}"
                    f"{_fmt(r['received_seconds']):>11}{announced:>10}{_fmt(r['attempts'], 'd'):>9}"
                    f"{_fmt(r['failures'], 'd'):>7}{_fmt(r['resent'], 'd'):>7}{r['wire_bytes'] / 1e6:>9.2f}"
                    f"{r['bytes_up'] / 1e6:>8.2f}{r['bytes_down'] / 1e6:>8.2f}{r['connections_cut']:>5}")
        if r.get("not_finished"):
            rows.append(f"  {'':<10}not finished: {r['not_finished']}")
    if any(r.get("announced_partial") for r in results["variants"].values()):
        rows.append("  * the first study.received came before the centre held every instance (a partial study)")
    edge = results["variants"].get("edge", {})
    for name in ("storescu", "orthanc"):
        other = results["variants"].get(name, {})
        if edge.get("seconds") and other.get("seconds"):
            rows.append(f"  {name} / edge: {other['seconds'] / edge['seconds']:.2f}x the time, "
                        f"{other['wire_bytes'] / edge['wire_bytes']:.2f}x the bytes on the wire")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench edge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 instances over a fast, flaky link")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: edge,storescu,orthanc")
    p.add_argument("--instances", type=int, default=None, help="instances in the study (default 1000)")
    p.add_argument("--ct-rows", type=int, default=None, help="CT slice rows = columns, 16 bit (default 64)")
    p.add_argument("--dx", type=int, default=None, help="DX images among them (default 5)")
    p.add_argument("--dx-rows", type=int, default=512, help="DX rows = columns (default 512)")
    p.add_argument("--ecg", type=int, default=None, help="12-lead ECGs among them, ~290 KB each (default 5)")
    p.add_argument("--latency-ms", type=float, default=None, help="added each way (default 200)")
    p.add_argument("--mbit", type=float, default=None, help="link cap, Mbit/s (default 2)")
    p.add_argument("--cut-mean-seconds", type=float, default=None,
                   help="mean gap between random drops of the line (default 60; 0: none)")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--resend", choices=("missing", "whole"), default="missing",
                   help="storescu: the technician resends what was not acknowledged, or the whole study")
    p.add_argument("--resend-delay", type=float, default=None, help="storescu: seconds before he resends (10)")
    p.add_argument("--orthanc-retry", type=float, default=None, help="Orthanc: seconds before a new STOW job (2)")
    p.add_argument("--max-attempts", type=int, default=50, help="give a variant up after this many attempts")
    p.add_argument("--quiet", type=float, default=None, help="YILIAN_STUDY_QUIET_SECONDS, centre and edge (10)")
    p.add_argument("--edge-poll", type=float, default=None, help="YILIAN_EDGE_POLL_SECONDS (1)")
    p.add_argument("--timeout", type=float, default=1800, help="per variant, seconds")
    p.add_argument("--out", type=Path, default=OUT / "edge.json")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = p.parse_args(argv)
    q = args.quick
    pick = lambda value, full, quick: value if value is not None else (quick if q else full)  # noqa: E731
    args.instances, args.ct_rows = pick(args.instances, 1000, 20), pick(args.ct_rows, 64, 32)
    args.dx, args.ecg = pick(args.dx, 5, 1), pick(args.ecg, 5, 1)
    args.resend_delay, args.orthanc_retry = pick(args.resend_delay, 10.0, 0.2), pick(args.orthanc_retry, 2.0, 0.2)
    args.quiet, args.edge_poll = pick(args.quiet, 10.0, 0.5), pick(args.edge_poll, 1.0, 0.2)
    args.edge_retry = (0.1, 0.5) if q else (2.0, 60.0)  # the edge's backoff: its defaults on a full run
    args.settle = 0.3 if q else 1.0  # how long a second study.received is looked for
    link_s = LinkSettings(latency=pick(args.latency_ms, 200.0, 5.0) / 1000, mbit_per_s=pick(args.mbit, 2.0, 40.0),
                          cut_mean_seconds=pick(args.cut_mean_seconds, 60.0, 1.5), seed=args.seed)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")

    work = Path(tempfile.mkdtemp(prefix="yilian-bench-edge-"))
    results: dict[str, Any] = {"link": link_s.__dict__, "load_before": os.getloadavg(), "variants": {},
                               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        studies = {v: build_study(work / "studies" / v, instances=args.instances, ct_rows=args.ct_rows, dx=args.dx,
                                  dx_rows=args.dx_rows, ecg=args.ecg) for v in variants}
        count, size = len(next(iter(studies.values()))), sum(f.stat().st_size for f in next(iter(studies.values())))
        results |= {"instances": count, "study_bytes": size}
        print(f"edge benchmark: one study of {count} instances ({args.instances - args.dx - args.ecg} CT "
              f"{args.ct_rows}x{args.ct_rows}, {args.dx} DX {args.dx_rows}x{args.dx_rows}, {args.ecg} ECG), "
              f"{size / 1e6:.2f} MB (small slices, not 512x512, so that a run at 2 Mbit/s takes minutes, "
              f"not hours: --ct-rows); link: {link_s.describe()}; storescu resends "
              f"{'what was not acknowledged' if args.resend == 'missing' else 'the whole study'} "
              f"{args.resend_delay:g} s after a failure; Orthanc starts a new STOW job for the study "
              f"{args.orthanc_retry:g} s after one failed; quiet period {args.quiet:g} s; "
              f"{os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in results['load_before'])}",
              flush=True)
        # Every process starts at once (starting is slow on a loaded machine); the variants then
        # run one after the other, each on its own link from its own start.
        with contextlib.ExitStack() as stack:
            t = time.monotonic()
            c, centre_proc = start_centre(work, args.quiet)
            stack.callback(centre_proc.stop)
            links, procs = {}, {}
            for v in variants:
                (work / v).mkdir()
                links[v] = stack.enter_context(Link(c.dicom_port if v == "storescu" else c.http_port, link_s))
                if v == "edge":
                    procs[v] = start_edge(work / v, links[v], c, args)
                elif v == "orthanc" and Path(DICOMWEB_PLUGIN).exists():
                    procs[v] = start_orthanc(work / v, links[v], c)
                if v in procs:
                    stack.callback(procs[v].stop)
            for proc in [centre_proc, *procs.values()]:
                proc.ready()
            print(f"  centre{''.join(f', {v}' for v in procs)} up in {time.monotonic() - t:.1f} s", flush=True)
            for v in variants:
                if v == "orthanc" and v not in procs:
                    results["variants"][v] = {"skipped": f"{DICOMWEB_PLUGIN} missing: install the Debian "
                                                         f"package orthanc-dicomweb (make debs)"}
                    continue
                t = time.monotonic()
                results["variants"][v] = RUNNERS[v](c, studies[v], links[v], procs.get(v), args)
                print(f"  {v}: {time.monotonic() - t:.1f} s", flush=True)
        results["load_after"] = os.getloadavg()
        print(table(results))
        print(f"  load average after: {' '.join(f'{x:.1f}' for x in results['load_after'])}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.out}")
        return 0
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
