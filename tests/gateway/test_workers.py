"""Extra ingest processes on one port (SO_REUSEPORT): everything stored, each study announced once."""

from __future__ import annotations

import asyncio

from ..dicom_samples import STORESCU, make_study
from ..support import wait_for
from .conftest import run
from .test_load import CLINICS


def _listeners(port: int) -> int:
    """Sockets listening on ``port`` (state 0A in /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.split(":")[1], 16) == port and state == "0A":
                count += 1
    return count


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def test_workers_share_the_port_and_ingest_concurrently(make_gateway, tmp_path):
    gateway = await make_gateway(gateway_workers=3, study_quiet_seconds=0.5)
    pool = gateway.service.workers
    assert pool is not None and len(pool.processes) == 2 and all(p.is_alive() for p in pool.processes)
    assert await run(_listeners, gateway.port) == 3
    cpu_before = [_cpu_ticks(p.pid) for p in pool.processes]
    studies = {ae: make_study(tmp_path / ae, instances=10, patient_id=ae) for ae in CLINICS}
    procs = [await asyncio.create_subprocess_exec(
        STORESCU, "-aet", ae, "-aec", gateway.ae_title, "127.0.0.1", str(gateway.port),
        *map(str, studies[ae].files), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        for ae in CLINICS]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    for ae, proc, (out, _) in zip(CLINICS, procs, outputs):
        assert proc.returncode == 0, f"{ae}: {out.decode()}"
    total = len(CLINICS) * 10
    # The kernel spread associations over the processes: the workers did real work.
    worked = [_cpu_ticks(p.pid) - before for p, before in zip(pool.processes, cpu_before)]
    assert sum(worked) > 5, f"workers used {worked} CPU ticks: did they receive any association?"
    assert await gateway.count("instances") == total
    assert len(await gateway.events("instance.stored")) == total

    async def all_announced() -> bool:
        return len(await gateway.events("study.received")) == len(CLINICS)
    await wait_for(all_announced, timeout=20, what="one study.received per study")
    for event in await gateway.events("study.received"):
        assert event["data"]["instance_count"] == 10 and event["data"]["revision"] == 1
    # Worker processes stop with the gateway.
    processes = list(pool.processes)
    await gateway.service.stop()
    assert not any(p.is_alive() for p in processes)
