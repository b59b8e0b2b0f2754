"""Extra ingest processes on one port (SO_REUSEPORT): everything stored, each study announced once."""

from __future__ import annotations

import asyncio

from services.core.consortium import parse_consortium

from ..dicom_samples import STORESCU, echoscu, make_study
from ..support import EXAMPLE_CONSORTIUM, wait_for
from .conftest import CHENGGUAN_CT, run
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
    # Each worker indexes what it acknowledged milliseconds later, in its own process.
    async def all_indexed() -> bool:
        return await gateway.count("instances") == total
    await wait_for(all_indexed, timeout=20, what="every instance indexed by the process that took it")
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


async def test_workers_follow_consortium_changes_kept_in_the_store(make_gateway, capfd):
    gateway = await make_gateway(gateway_workers=2)
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace("[CG_DR1, CG_US1, CG_CT1, CG_ECG1]",
                                                         "[CG_DR1, CG_US1, CG_ECG1, CG_NEW_US]")
    changed = parse_consortium(text)
    # What the admin API does: replace the topology in this process and in the store.
    gateway.rt.consortium = changed
    async with gateway.rt.store.transaction() as tx:
        await tx.put("config", {"id": "consortium", "digest": changed.digest(), "document": changed.to_dict()})

    # The kernel picks the process for each association, so a run of echoes cannot prove
    # that every process agrees; a worker says so in its log when it adopts the change.
    said = []
    async def every_worker_adopted() -> bool:
        said.append(capfd.readouterr().err)
        return "".join(said).count("gateway worker adopted a new consortium") == 1
    await wait_for(every_worker_adopted, timeout=15, interval=0.2, what="the worker adopts the new consortium")
    accepted = [await run(echoscu, gateway.port, calling="CG_NEW_US") for _ in range(6)]
    assert all(r.returncode == 0 for r in accepted)
    dropped = [await run(echoscu, gateway.port, calling=CHENGGUAN_CT) for _ in range(6)]
    assert all(r.returncode != 0 for r in dropped)
