"""Result delivery benchmark: time from sign (the API call returns) to the SR received by the
clinic's SCP, under a steady stream of signed reports.

``yilian up`` runs as a subprocess on the embedded default (SQLite, durable event log), with a
DCMTK ``storescp`` registered as chengguan-thc's terminal.  The studies come in through the
gateway (one ``storescu`` association), reading requests are created and claimed through the
API beforehand; then reports are signed at a fixed rate and the storescp's output directory
is watched for each report's SR (its SOP Instance UID is fixed by the report id).  Prints
p50/p90/p99/max latency and the sustained rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from services.core.auth import issue_token
from services.core.consortium import load_consortium
from services.delivery.model import uid_for

from . import peers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "consortium.example.yaml"
JWT = "bench-secret-" + "x" * 32


def _consortium(directory: Path, scp_port: int) -> Path:
    text = EXAMPLE.read_text("utf-8").replace("scp: {ae_title: CG_TERM, host: 127.0.0.1, port: 11221}",
                                              f"scp: {{ae_title: CG_TERM, host: 127.0.0.1, port: {scp_port}}}")
    # the DICOM channel (and the inbox) only: no webhook receiver in this benchmark
    text = "\n".join(line for line in text.splitlines() if "webhook: {url:" not in line) + "\n"
    path = directory / "consortium.yaml"
    path.write_text(text, "utf-8")
    return path


class Api:
    def __init__(self, port: int, consortium: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        c = load_consortium(consortium)
        self.tokens = {u: issue_token(c, u, JWT, ttl=3600) for u in ("cg-clinic", "dr-wang")}

    def call(self, method: str, path: str, user: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body or {}).encode() if method != "GET" else None,
                                     headers={"Authorization": f"Bearer {self.tokens[user]}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


def _studies(directory: Path, n: int) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from tests.dicom_samples import make_study
    return [make_study(directory, series=1, instances=1, patient_id=f"B{i:04d}").study_uid for i in range(n)]


def run(n: int, rate: float, work: Path) -> dict:
    out = work / "clinic"
    out.mkdir()
    scp_port, http, dicom = peers.free_port(), peers.free_port(), peers.free_port()
    scp = subprocess.Popen([peers.STORESCP, "-aet", "CG_TERM", "-od", str(out), str(scp_port)], env=peers.ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    consortium = _consortium(work, scp_port)
    env = {**{k: v for k, v in peers.ENV.items() if not k.startswith("YILIAN_")},
           "YILIAN_DATA_DIR": str(work / "yilian"), "YILIAN_HTTP_PORT": str(http), "YILIAN_DICOM_PORT": str(dicom),
           "YILIAN_BIND_HOST": "127.0.0.1", "YILIAN_CONSORTIUM": str(consortium), "YILIAN_JWT_SECRET": JWT,
           "YILIAN_LOG_LEVEL": "INFO", "YILIAN_STUDY_QUIET_SECONDS": "1"}
    log = open(work / "yilian.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        if not proc.stdout.readline().startswith("{"):
            raise RuntimeError(f"yilian did not start; see {work / 'yilian.log'}")
        peers._wait(lambda: peers._listening(dicom) and peers._listening(scp_port), 30, "yilian and storescp")
        uids = _studies(work / "studies", n)
        sent = subprocess.run([peers.STORESCU, "-aet", "CG_CT1", "-aec", "YILIAN", "+sd", "+r", "127.0.0.1",
                               str(dicom), str(work / "studies")], env=peers.ENV, capture_output=True, text=True)
        if sent.returncode != 0:
            raise RuntimeError(f"storescu failed: {sent.stderr[-2000:]}")
        api = Api(http, consortium)

        def received(uid: str) -> bool:
            try:
                return api.call("GET", f"/api/v1/studies/{uid}", "cg-clinic").get("state") == "received"
            except OSError:
                return False
        arrived: set[str] = set()

        def all_received() -> bool:
            arrived.update(u for u in uids if u not in arrived and received(u))
            return len(arrived) == len(uids)
        peers._wait(all_received, 120, "studies received")
        # steady state: the PDF font's fast subset is cached under the data dir after the first start
        peers._wait(lambda: any((work / "yilian" / "cache").glob("*.ttf")), 60, "PDF font subset")
        requests = []
        for uid in uids:
            r = api.call("POST", "/api/v1/reading-requests", "cg-clinic", {
                "study_uid": uid, "kind": "imaging", "priority": "routine", "clinical_question": "体检"})
            api.call("POST", f"/api/v1/reading-requests/{r['id']}/claim", "dr-wang")
            requests.append(r["id"])

        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                now = time.monotonic()
                for entry in os.scandir(out):
                    uid = entry.name.split(".", 1)[-1]  # storescp names files <modality prefix>.<SOP UID>
                    if uid not in seen:
                        seen[uid] = now
                time.sleep(0.002)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        signed: dict[str, float] = {}
        t0 = time.monotonic()
        for i, rid in enumerate(requests):
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            report = api.call("POST", f"/api/v1/reading-requests/{rid}/sign", "dr-wang",
                              {"findings": "双肺纹理清晰，心影不大。", "impression": "胸部未见明显异常。"})
            signed[report["report_id"]] = time.monotonic()
        sign_span = time.monotonic() - t0
        wanted = {uid_for(rid, "sr"): rid for rid in signed}
        deadline = time.monotonic() + 120
        while not all(name in seen for name in wanted) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        missing = [name for name in wanted if name not in seen]
        if missing:
            raise RuntimeError(f"{len(missing)} SRs never arrived (e.g. {missing[0]}); files: {len(seen)}")
        latencies = sorted((seen[name] - signed[rid]) * 1000 for name, rid in wanted.items())
        last = max(seen[name] for name in wanted)
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        return {"reports": n, "rate_per_s": rate, "sign_span_s": round(sign_span, 2),
                "delivered_per_s": round(n / (last - t0), 2), "p50_ms": round(q[49], 1), "p90_ms": round(q[89], 1),
                "p99_ms": round(q[98], 1), "max_ms": round(latencies[-1], 1)}
    finally:
        peers._stop(proc)
        peers._stop(scp)
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench delivery", description=__doc__)
    p.add_argument("--quick", action="store_true", help="40 reports (a smoke run)")
    p.add_argument("--reports", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0, help="reports signed per second")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, received files)")
    args = p.parse_args(argv)
    n = 40 if args.quick else args.reports
    if args.keep:
        tmp = tempfile.mkdtemp(prefix="yilian-bench-delivery-")
        print(f"work directory: {tmp}")
        figures = run(n, args.rate, Path(tmp))
    else:
        with tempfile.TemporaryDirectory(prefix="yilian-bench-delivery-") as tmp:
            figures = run(n, args.rate, Path(tmp))
    print(f"delivery: sign -> SR at the clinic's storescp, {figures['reports']} reports at {args.rate:g}/s")
    print(f"  p50 {figures['p50_ms']} ms   p90 {figures['p90_ms']} ms   p99 {figures['p99_ms']} ms   "
          f"max {figures['max_ms']} ms   sustained {figures['delivered_per_s']} results/s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
