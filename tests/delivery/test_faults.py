"""Township networks fail: the clinic's SCP is down for a while, its HIS answers 500, a channel
never recovers (dead letter, re-drive).  Each result still arrives exactly once per channel."""

from __future__ import annotations

from pydicom import dcmread

from ..support import wait_for


async def _state(y, report_id: str, channel: str) -> dict:
    # {} until the delivery service has consumed report.signed
    return (await y.deliveries(report_id)).get(channel, {"state": None, "attempts": 0})


async def test_clinic_scp_down_for_a_while_then_back_gets_the_result_once(make_yilian, clinic_scp):
    y = await make_yilian(scp_port=clinic_scp.port)  # storescp not started yet: the terminal is off
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid))["report_id"]

    async def retried() -> bool:
        d = await _state(y, report_id, "dicom")
        return d["attempts"] >= 3 and d["state"] == "pending"
    await wait_for(retried, timeout=20, what="three failed attempts while the clinic SCP is down")
    d = await _state(y, report_id, "dicom")
    assert d["last_error"] == f"connection to CG_TERM@127.0.0.1:{clinic_scp.port} refused", d["last_error"]
    assert all(not h["ok"] for h in d["history"])

    clinic_scp.start()

    async def delivered() -> bool:
        return (await _state(y, report_id, "dicom"))["state"] == "delivered"
    await wait_for(delivered, timeout=20, what="delivery once the clinic SCP is back")
    files = clinic_scp.files()
    uids = sorted(dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)
    result = await y.rt.store.get("results", report_id)
    assert uids == sorted([result["sr_sop_instance_uid"], result["pdf_sop_instance_uid"]])
    assert len(files) == 2
    dicom_delivered = [e for e in await y.events("result.delivered") if e["data"]["channel"] == "dicom"]
    assert len(dicom_delivered) == 1 and dicom_delivered[0]["data"]["attempts"] >= 4


async def test_webhook_answering_500_then_200_is_delivered_once_with_one_key_and_valid_signature(
        make_yilian, clinic_scp, webhook_receiver):
    clinic_scp.start()
    webhook_receiver.answers = [500, 503]
    y = await make_yilian(scp_port=clinic_scp.port, webhook_port=webhook_receiver.port)
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid))["report_id"]

    async def delivered() -> bool:
        return (await _state(y, report_id, "webhook"))["state"] == "delivered"
    await wait_for(delivered, timeout=20, what="webhook delivered after two refusals")
    requests = webhook_receiver.requests
    assert len(requests) == 3
    keys = {r["headers"]["Idempotency-Key"] for r in requests}
    ids = {r["headers"]["X-Yilian-Delivery-Id"] for r in requests}
    assert len(keys) == 1 and len(ids) == 1
    assert all(r["headers"]["X-Yilian-Timestamp"].isdigit() for r in requests)
    applied = webhook_receiver.applied()  # only requests whose HMAC verifies count
    assert len(applied) == 1 and applied[0]["result_id"] == report_id
    assert applied[0]["findings"] and applied[0]["sr_sop_instance_uid"]
    d = await _state(y, report_id, "webhook")
    assert d["attempts"] == 3 and [h["ok"] for h in d["history"]] == [False, False, True]
    assert "500" in d["history"][0]["detail"]
    assert len([e for e in await y.events("result.delivered") if e["data"]["channel"] == "webhook"]) == 1


async def test_past_the_horizon_a_dead_letter_that_a_coordinator_sees_and_redrives(make_yilian, clinic_scp):
    y = await make_yilian(scp_port=clinic_scp.port, horizon=1.0)
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid))["report_id"]

    async def dead() -> bool:
        return (await _state(y, report_id, "dicom"))["state"] == "dead"
    await wait_for(dead, timeout=20, what="dead letter after the horizon")
    failed = await y.events("result.delivery_failed")
    assert len(failed) == 1 and failed[0]["data"]["channel"] == "dicom"
    assert "horizon" in failed[0]["data"]["reason"] and failed[0]["data"]["organization"] == "chengguan-thc"

    # the signing centre's coordinator sees it; another centre's does not; a clinic may not ask
    letters = (await y.ok("GET", "/api/v1/deliveries/dead-letters", "coord-county"))["items"]
    assert [(d["result_id"], d["channel"]) for d in letters] == [(report_id, "dicom")]
    assert (await y.ok("GET", "/api/v1/deliveries/dead-letters", "coord-city"))["items"] == []
    assert (await y.call("GET", "/api/v1/deliveries/dead-letters", "cg-clinic"))[0] == 403
    delivery_id = letters[0]["id"]
    assert (await y.call("POST", f"/api/v1/deliveries/{delivery_id}/redrive", "coord-city", {}))[0] == 404

    clinic_scp.start()
    redriven = await y.ok("POST", f"/api/v1/deliveries/{delivery_id}/redrive", "coord-county", {})
    assert redriven["state"] == "pending" and redriven["redrives"] == 1

    async def delivered() -> bool:
        return (await _state(y, report_id, "dicom"))["state"] == "delivered"
    await wait_for(delivered, timeout=20, what="delivered after re-drive")
    assert len(clinic_scp.files()) == 2
    status, problem = await y.call("POST", f"/api/v1/deliveries/{delivery_id}/redrive", "coord-county", {})
    assert status == 409 and "not dead-lettered" in problem["detail"]
    assert await y.rt.store.count("audit", {"action": "result.redrive", "actor": "coord-county"}) == 1
