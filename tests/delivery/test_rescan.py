"""A study returned for a re-scan is pushed to the clinic at once, like a result: an inbox
entry of its own kind (``source: "returned"``, the reason), the live stream, and the signed
webhook; no DICOM object, and the monitor does not count it as a delivered result."""

from __future__ import annotations

from services.core.events import Event
from services.monitor.readmodel import keys

from .test_stream import open_stream


async def test_returned_study_reaches_the_clinic_inbox_stream_and_webhook(make_yilian, clinic_scp,
                                                                          webhook_receiver):
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port, webhook_port=webhook_receiver.port)
    screen = await open_stream(y, "cg-clinic")
    study_uid = await y.send_study()
    request = await y.ok("POST", "/api/v1/reading-requests", "cg-clinic", {
        "study_uid": study_uid, "kind": "imaging", "priority": "urgent", "clinical_question": "外伤后胸痛"},
        status=201)
    await y.ok("POST", f"/api/v1/reading-requests/{request['id']}/claim", "dr-wang", {})
    await y.ok("POST", f"/api/v1/reading-requests/{request['id']}/return", "dr-wang",
               {"reason_code": "image_quality", "comment": "运动伪影严重，请重扫"})

    # the clinic's open screen hears of it at once
    pushed = await screen.next_event()
    assert pushed["event"] == "result.delivered" and pushed["data"]["data"]["channel"] == "inbox"
    data = pushed["data"]["data"]
    assert data["source"] == "returned" and data["request_id"] == request["id"]
    assert data["summary"]["source"] == "returned"
    assert data["summary"]["return_reason_code"] == "image_quality"
    assert data["summary"]["return_comment"] == "运动伪影严重，请重扫"
    notice_id = data["result_id"]

    # its inbox lists it, to acknowledge like a result
    inbox = await y.ok("GET", "/api/v1/results?unacknowledged=true", "cg-clinic")
    [item] = [r for r in inbox["items"] if r["id"] == notice_id]
    assert item["source"] == "returned" and item["study_uid"] == study_uid and item["reader_name"] == "王建国"
    assert {d["channel"] for d in item["deliveries"]} == {"inbox", "webhook"}  # no SR for a re-scan
    await y.ok("POST", f"/api/v1/results/{notice_id}/acknowledge", "cg-clinic", {"note": "已安排重扫"})

    # its HIS gets the reason, signed
    await y.delivered(notice_id, channel="webhook", timeout=30)
    [body] = webhook_receiver.applied()
    assert body["source"] == "returned" and body["return_reason_code"] == "image_quality"
    assert body["return_comment"] == "运动伪影严重，请重扫" and body["request_id"] == request["id"]
    assert body["study_uid"] == study_uid and "findings" not in body
    assert clinic_scp.files() == []  # nothing C-STOREd

    assert len(await y.rt.store.find("results", {"study_uid": study_uid})) == 1
    screen.resp.close()


def test_the_monitor_does_not_count_a_rescan_notice_as_a_delivered_result():
    data = {"result_id": "rs-rr-1", "organization": "chengguan-thc", "critical": False, "delivery_id": "dl-1",
            "channel": "inbox", "attempts": 1, "delivered_at": "2026-12-02T17:44:58.433Z"}
    returned = Event("result.delivered", subject="rs-rr-1", data={**data, "source": "returned"}, source="/t")
    report = Event("result.delivered", subject="rp-1", data={**data, "result_id": "rp-1", "source": "report"},
                   source="/t")
    assert keys(returned) == [] and keys(report) != []
