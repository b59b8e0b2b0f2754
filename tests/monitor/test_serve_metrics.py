"""``/metrics`` on the health listener of a ``yilian serve NAME`` process (no api there)."""

from __future__ import annotations

from ..e2e.process import YilianProcess


def test_a_serve_process_answers_metrics(tmp_path):
    monitor = YilianProcess(tmp_path / "data", args=("serve", "monitor"))
    monitor.start()
    try:
        status, body = monitor.http("/metrics")
        assert status == 200
        lines = body.decode().splitlines()
        assert 'yilian_service_up{service="monitor"} 1' in lines
        assert 'yilian_bus_lag_events{group="monitor"} 0' in lines
        for family in ("yilian_queue_depth gauge", "yilian_turnaround_seconds histogram",
                       "yilian_queue_at_risk gauge", "yilian_critical_unacknowledged gauge"):
            assert f"# TYPE {family}" in lines
        assert 'yilian_queue_at_risk{centre="county-imaging"} 0' in lines
        assert monitor.http("/healthz")[0] == 200
    finally:
        assert monitor.terminate() == 0, monitor.log_tail()
