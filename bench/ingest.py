"""Ingest benchmark: DCMTK storescu sends the same corpora to Yilian, Orthanc and DCMTK storescp.

Yilian runs on the embedded default with everything durable (SQLite index in WAL with
synchronous=FULL, fsynced blobs, instance.stored events in the durable log).  Each peer is
started fresh for each run; each run is checked: every instance sent must be held.
Prints instances/s and MB/s per peer, and Yilian's ratios to Orthanc and to storescp.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import corpus, peers

CLINIC_AES = ["CG_DR1", "CG_US1", "CG_CT1", "CG_ECG1", "DB_DR1", "DB_US1", "DB_ECG1", "HM_DR1"]
OUT = Path(__file__).resolve().parent / "out"


def send(peer: peers.Peer, directory: Path, calling_ae: str = "CG_CT1") -> None:
    cmd = [peers.STORESCU, "-aet", calling_ae, "-aec", peer.ae_title, "+sd", "+r", "+sp", "*.dcm",
           "127.0.0.1", str(peer.port), str(directory)]
    result = subprocess.run(cmd, env=peers.ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {peer.name} failed ({result.returncode}): {result.stderr[-2000:]}")


def timed_run(start, directory: Path, expected: int, *, concurrent: bool) -> tuple[float, float, float]:
    """(seconds until every instance is held — acknowledged *and* indexed —, peak RSS MB, seconds
    until storescu had every C-STORE-RSP)."""
    # Every run's data stays until the end of the benchmark (_remove_runs): on a filesystem
    # mounted with `discard` (this VM's), deleting a run's thousands of files makes creating
    # files slow for a while afterwards, for whichever system runs next.
    tmp = tempfile.mkdtemp(prefix="yilian-bench-")
    _RUNS.append(Path(tmp))
    with start(Path(tmp)) as peer:
        t0 = time.perf_counter()
        if concurrent:
            dirs = sorted(p for p in directory.iterdir() if p.is_dir())
            with ThreadPoolExecutor(len(dirs)) as pool:
                list(pool.map(lambda pair: send(peer, pair[1], CLINIC_AES[pair[0]]), enumerate(dirs)))
        else:
            send(peer, directory)
        acknowledged = time.perf_counter() - t0
        # Yilian answers once an instance is durable in its journal and indexes it milliseconds
        # later: the clock stops when the index (or Orthanc's, or storescp's directory) holds all.
        held = _settled_count(peer, expected)
        elapsed = time.perf_counter() - t0
        rss = peers.peak_rss_mb(peer.pid) if peer.pid else 0.0
        if held != expected:
            raise RuntimeError(f"{peer.name} holds {held} instances after the run, expected {expected}")
        return elapsed, rss, acknowledged


_RUNS: list[Path] = []


def _remove_runs() -> None:
    for path in _RUNS:
        shutil.rmtree(path, ignore_errors=True)
    _RUNS.clear()


def _settled_count(peer: peers.Peer, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (n := peer.count()) < expected and time.monotonic() < deadline:
        time.sleep(0.002)
    return n


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        _remove_runs()  # the runs' data directories, kept until now


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small corpora, one repetition")
    p.add_argument("--repeat", type=int, default=None, help="runs per peer and corpus (the median is kept)")
    p.add_argument("--workers", type=int, default=None, help="Yilian gateway worker processes (default: cores)")
    p.add_argument("--no-pynetdicom", action="store_true", help="skip Yilian with pynetdicom serving C-STORE")
    p.add_argument("--only", default="", help="comma-separated scenarios (small,mixed,clinics)")
    p.add_argument("--systems", default="", help="comma-separated Yilian rows to run (e.g. yilian,yilian-inline)")
    args = p.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    workers = args.workers or os.cpu_count() or 1

    scenarios = [s for s in [("small", False), ("mixed", False), ("clinics", True)]
                 if not args.only or s[0] in args.only.split(",")]
    systems = {"yilian": lambda d: peers.yilian(d, workers=1),
               "yilian-inline": lambda d: peers.yilian(d, workers=1, indexer="inline")}
    if workers > 1:
        systems[f"yilian-{workers}w"] = lambda d: peers.yilian(d, workers=workers)
    systems[f"yilian-up-{workers}w"] = lambda d: peers.yilian(d, workers=workers, everything=True)
    if not args.no_pynetdicom:
        systems["yilian-pynetdicom"] = lambda d: peers.yilian(d, workers=1, native=False)
    systems |= {"orthanc": peers.orthanc, "storescp": peers.storescp}
    if args.systems:  # the two peers are always measured: the ratios need them
        keep = set(args.systems.split(",")) | {"orthanc", "storescp"}
        systems = {name: start for name, start in systems.items() if name in keep}
    print(f"Yilian: embedded default (each C-STORE answered once fdatasynced in the ingest journal; blob, "
          f"SQLite index and instance.stored follow; the clock stops when everything is indexed); "
          f"'yilian[-Nw]' = yilian serve pacs_gateway (N receiving processes; the default "
          f"YILIAN_GATEWAY_INDEXER=auto adds an indexer process on 2 cores or more), '-inline' = "
          f"YILIAN_GATEWAY_INDEXER=inline, 'yilian-up' = every "
          f"service in the process (yilian up), '-pynetdicom' = YILIAN_DICOM_NATIVE_UL=false; "
          f"{os.cpu_count()} cores; storescu with TCP_NODELAY=1; median of {repeat}")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, concurrent in scenarios:
        directory = corpus.build(name, quick=args.quick)
        count, size = corpus.size_and_count(directory)
        results[name] = {}
        for system, start in systems.items():
            if concurrent and system == "storescp":
                start = lambda d: peers.storescp(d, fork=True)  # noqa: E731 - one process per association
            runs = [timed_run(start, directory, count, concurrent=concurrent) for _ in range(repeat)]
            seconds = statistics.median(r[0] for r in runs)
            results[name][system] = {"seconds": seconds, "instances_per_s": count / seconds,
                                     "mb_per_s": size / seconds / 1e6, "instances": count, "bytes": size,
                                     "peak_rss_mb": max(r[1] for r in runs),
                                     "acknowledged_seconds": statistics.median(r[2] for r in runs),
                                     "runs_seconds": [r[0] for r in runs]}
        print(f"\n{name}: {count} instances, {size / 1e6:.1f} MB"
              f"{' over 8 concurrent associations' if concurrent else ''} (median of {repeat})")
        print(f"  {'system':<20}{'inst/s':>10}{'MB/s':>10}{'seconds':>10}{'acked at':>10}{'peak RSS MB':>13}")
        for system, r in results[name].items():
            print(f"  {system:<20}{r['instances_per_s']:>10.1f}{r['mb_per_s']:>10.1f}{r['seconds']:>10.2f}"
                  f"{r['acknowledged_seconds']:>10.2f}{r['peak_rss_mb']:>13.0f}")
        for y in (s for s in systems if s.startswith("yilian")):
            ours = results[name][y]["instances_per_s"]
            print(f"  {y} / orthanc = {ours / results[name]['orthanc']['instances_per_s']:.2f}x   "
                  f"{y} / storescp = {ours / results[name]['storescp']['instances_per_s']:.2f}x")
    OUT.mkdir(exist_ok=True)
    (OUT / "ingest.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {OUT / 'ingest.json'}")
    return 0
