"""The edge benchmark runs end to end on a small scale (so it does not rot): one centre, the edge,
storescu straight to the gateway with resends, and Orthanc's DICOMweb plugin forwarding, each over
its own flaky emulated link; every instance arrives, the link's byte counts are real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_edge_benchmark_smoke(tmp_path):
    out = tmp_path / "edge.json"
    run = subprocess.run([sys.executable, "-m", "bench", "edge", "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    n = results["instances"]
    assert n == 20 and results["study_bytes"] > 0
    assert set(results["variants"]) == {"edge", "storescu", "orthanc"}
    for name, r in results["variants"].items():
        if "skipped" in r:  # only Orthanc may be, and it says why
            assert name == "orthanc" and "orthanc-dicomweb" in r["skipped"]
            continue
        assert r["held"] == n and r["seconds"] > 0, (name, r)  # every instance at the centre
        assert r["bytes_up"] >= results["study_bytes"] * 0.5 and r["bytes_down"] > 0, (name, r)
        assert r["study_received"] >= 1, (name, r)
    edge = results["variants"]["edge"]
    assert edge["study_received"] == 1 and edge["modality_seconds"] <= edge["seconds"]
    assert results["variants"]["storescu"]["attempts"] >= 1
    assert "storescu / edge" in run.stdout and "wire MB" in run.stdout
