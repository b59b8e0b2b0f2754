"""The worklist benchmark runs end to end on a small scale (so it does not rot): yilian up, seeding
through the workflow, readers over HTTP, a DX arriving by C-STORE and its site-rule task seen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_worklist_benchmark_smoke(tmp_path):
    out = tmp_path / "worklist.json"
    run = subprocess.run([sys.executable, "-m", "bench", "worklist", "--tasks", "120", "--readers", "4",
                          "--seconds", "4", "--saturation-seconds", "1", "--arrivals", "3", "--settle", "1",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert sum(results["seed"]["open_tasks"].values()) == 120
    assert results["error_count"] == 0
    for model in ("single", "realistic", "saturation"):
        assert results[model]["worklist"]["n"] > 0 and results[model]["worklist"]["p99"] > 0
    arrivals = results["arrivals"]
    assert arrivals["received"] == arrivals["queued"] == arrivals["visible"] == 3
    assert 0 <= arrivals["to_queued_ms"]["p50"] <= arrivals["to_visible_ms"]["p99"]
    assert "worklist realistic" in run.stdout and "study.received->queued" in run.stdout
