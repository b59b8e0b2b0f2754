"""危急值: a critical result must be acknowledged by a person at the clinic in time, else it
escalates (event naming the clinic's contact, monitor flag, audit), again and again until
acknowledged.  The delivery clock is driven by the test, so "on time" is exact."""

from __future__ import annotations

import time

from ..support import ManualClock, wait_for

ACK = 600.0
REPEAT = 300.0
CONTACT = "城关镇卫生院院办 0371-0000021"  # chengguan-thc's contact in the example consortium


async def _critical_result(y) -> str:
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid, findings="左侧大量气胸，纵隔右移。", impression="左侧张力性气胸",
                              critical=True, category="张力性气胸"))["report_id"]

    async def stored() -> bool:
        d = (await y.deliveries(report_id)).get("dicom")
        return d is not None and d["state"] == "delivered"
    await wait_for(stored, timeout=20, what="critical result stored at the clinic SCP")
    return report_id


async def test_unacknowledged_critical_result_escalates_on_time_and_repeats_until_acknowledged(
        make_yilian, clinic_scp):
    from services.delivery.critical import escalate_overdue
    clinic_scp.start()
    clock = ManualClock(time.time())
    y = await make_yilian(scp_port=clinic_scp.port, clock=clock, critical_ack_seconds=ACK,
                          critical_repeat_seconds=REPEAT)
    report_id = await _critical_result(y)
    result = await y.rt.store.get("results", report_id)
    assert result["acknowledged_at"] is None, "a critical result is never acknowledged by the DICOM store"

    clock.advance(ACK - 1)
    assert await escalate_overdue(y.rt) == 0 and await y.events("critical.unacknowledged") == []
    clock.advance(1.5)
    assert await escalate_overdue(y.rt) == 1
    [first] = await y.events("critical.unacknowledged")
    assert first["subject"] == report_id
    assert first["data"]["escalation"] == 1 and first["data"]["contact"] == CONTACT
    assert first["data"]["organization"] == "chengguan-thc" and first["data"]["critical_category"] == "张力性气胸"
    assert 0 <= first["data"]["overdue_seconds"] < 5
    # the reading centre's side: its readers on duty (no roster: the file's on_duty flags; dr-zhou is
    # off), who include its lead dr-wang (rosters: tests/api/test_rosters.py)
    assert first["data"]["escalate_to"] == ["dr-li", "dr-wang"]
    flagged = await y.ok("GET", f"/api/v1/results/{report_id}", "coord-county")
    assert flagged["escalated"] is True and flagged["escalations"] == 1

    assert await escalate_overdue(y.rt) == 0  # once per interval, not once per sweep
    clock.advance(REPEAT + 0.5)
    assert await escalate_overdue(y.rt) == 1
    assert [e["data"]["escalation"] for e in await y.events("critical.unacknowledged")] == [1, 2]
    # the unacknowledged filter is the clinic's "to do" list
    todo = (await y.ok("GET", "/api/v1/results?unacknowledged=true", "cg-clinic"))["items"]
    assert [r["id"] for r in todo] == [report_id]

    acked = await y.ok("POST", f"/api/v1/results/{report_id}/acknowledge", "cg-clinic",
                       {"note": "已电话通知患者立即转诊"})
    assert acked["acknowledgement"]["mode"] == "person" and acked["acknowledgement"]["late"] is True
    clock.advance(10 * REPEAT)
    assert await escalate_overdue(y.rt) == 0
    assert len(await y.events("critical.unacknowledged")) == 2
    [ack] = await y.events("result.acknowledged")
    assert ack["data"]["acknowledged_by"] == "cg-clinic" and ack["data"]["late"] is True
    actions = [a["action"] for a in await y.rt.store.find("audit", {"resource": f"result/{report_id}"},
                                                          sort=(("time", 1),))]
    assert actions.count("critical.escalate") == 2 and "result.acknowledge" in actions
    assert (await y.ok("GET", "/api/v1/results?unacknowledged=true", "cg-clinic"))["items"] == []


async def test_critical_result_acknowledged_in_time_does_not_escalate(make_yilian, clinic_scp):
    from services.delivery.critical import escalate_overdue
    clinic_scp.start()
    clock = ManualClock(time.time())
    y = await make_yilian(scp_port=clinic_scp.port, clock=clock, critical_ack_seconds=ACK,
                          critical_repeat_seconds=REPEAT)
    report_id = await _critical_result(y)
    clock.advance(ACK - 60)
    # another clinic cannot acknowledge it (nor know it exists); a reader may see it but not acknowledge
    assert (await y.call("POST", f"/api/v1/results/{report_id}/acknowledge", "db-clinic", {}))[0] == 404
    assert (await y.call("POST", f"/api/v1/results/{report_id}/acknowledge", "dr-wang", {}))[0] == 403
    acked = await y.ok("POST", f"/api/v1/results/{report_id}/acknowledge", "cg-clinic", {})
    assert acked["acknowledgement"]["late"] is False and acked["ack_due_at"] is None
    again = await y.ok("POST", f"/api/v1/results/{report_id}/acknowledge", "cg-clinic", {})
    assert again["acknowledged_at"] == acked["acknowledged_at"]  # repeating changes nothing
    clock.advance(10 * ACK)
    assert await escalate_overdue(y.rt) == 0
    assert await y.events("critical.unacknowledged") == []
    assert len(await y.events("result.acknowledged")) == 1
