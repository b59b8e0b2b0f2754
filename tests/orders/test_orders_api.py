"""Exam requests (申请管理) through the API: create, list, get, change, cancel; scoped to the
organisation, audited, and every answer true to schemas/openapi.yaml."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..api.conftest import api  # noqa: F401 - the fixture
from ..api.test_openapi_contract import contract  # noqa: F401 - the fixture

ORDER = {"patient_id": "CG900", "patient_name": "Zhang^San=张^三", "sex": "M", "birth_date": "19600101",
         "kind": "imaging", "modality": "CT", "body_part": "CHEST", "procedure_code": "CT-CHEST",
         "procedure_description": "胸部CT平扫", "clinical_question": "咳嗽两周，排除肺炎",
         "requesting_physician": "李^医生", "priority": "urgent", "green_channel": "胸痛", "signed_resident": True,
         "station_ae": "CG_CT1", "scheduled_at": "2026-12-03T09:30:00+08:00"}


async def test_a_clinic_orders_an_exam_and_gets_worklist_identifiers(api, contract):  # noqa: F811
    order = await api.ok("POST", "/api/v1/orders", "cg-clinic", ORDER, status=201)
    assert order["state"] == "scheduled" and order["organization"] == "chengguan-thc"
    assert order["accession_number"].startswith("YL") and len(order["accession_number"]) <= 16
    assert order["scheduled_step_id"] and len(order["scheduled_step_id"]) <= 16
    assert order["study_instance_uid"].startswith("2.25.")
    # DICOM date and time in the consortium's zone (Asia/Shanghai), the instant in UTC
    assert (order["scheduled_date"], order["scheduled_time"]) == ("20261203", "093000")
    assert order["scheduled_at"] == "2026-12-03T01:30:00.000Z"
    assert order["remote_reading"] is True and order["green_channel"] == "胸痛"

    got = await api.ok("GET", f"/api/v1/orders/{order['id']}", "cg-clinic")
    assert got["accession_number"] == order["accession_number"]
    listed = await api.ok("GET", "/api/v1/orders", "cg-clinic")
    assert [o["id"] for o in listed["items"]] == [order["id"]]

    # Another township neither sees nor changes it
    assert (await api.ok("GET", "/api/v1/orders", "db-clinic"))["items"] == []
    status, problem, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", user="db-clinic")
    assert status == 404
    status, _, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", user="db-clinic",
                                  json={"reason": "x"})
    assert status == 404
    # A reader has no business here
    status, _, _ = await api.call("GET", "/api/v1/orders", user="dr-wang")
    assert status == 403

    changed = await api.ok("POST", f"/api/v1/orders/{order['id']}/change", "cg-clinic",
                           {"changes": {"scheduled_at": "2026-12-03T14:00:00+08:00", "station_ae": "CG_DR1",
                                        "modality": "DX"}, "reason": "CT 故障"})
    assert (changed["modality"], changed["station_ae"], changed["scheduled_time"]) == ("DX", "CG_DR1", "140000")
    cancelled = await api.ok("POST", f"/api/v1/orders/{order['id']}/cancel", "cg-clinic", {"reason": "患者未到"})
    assert cancelled["state"] == "cancelled" and cancelled["on_worklist"] is False
    status, problem, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/change", user="cg-clinic",
                                        json={"changes": {"priority": "stat"}})
    assert status == 409 and "cancel" in problem["detail"]

    types = [e.event.type for e in await api.rt.store.read_log(0, limit=1000) if e.event.subject == order["id"]]
    assert types == ["order.created", "order.changed", "order.cancelled"]
    actions = [r["action"] for r in await api.rt.store.find("audit", {"resource": f"order/{order['id']}"},
                                                            sort=(("time", 1),))]
    assert actions[:1] == ["order.create"] and "order.change" in actions and "order.cancel" in actions


async def test_bad_orders_are_refused_with_the_field_and_nothing_kept(api, contract):  # noqa: F811
    for body, field in ((ORDER | {"station_ae": "DB_DR1"}, "station_ae"),  # another township's modality
                        (ORDER | {"scheduled_at": "tomorrow"}, "scheduled_at"),
                        (ORDER | {"birth_date": "1960-01-01"}, "birth_date"),
                        ({k: v for k, v in ORDER.items() if k != "patient_id"}, "patient_id"),
                        (ORDER | {"patient_name": "Zhang\\San"}, "patient_name")):
        status, problem, _ = await api.call("POST", "/api/v1/orders", user="cg-clinic", json=body)
        assert status == 422, (field, problem)
        assert field in problem["detail"], (field, problem["detail"])
    assert await api.rt.store.find("orders", {}) == []


async def test_orders_with_no_study_past_the_overdue_time_are_listed_for_the_clinic(api, contract):  # noqa: F811
    now = datetime.now(UTC)
    late = await api.ok("POST", "/api/v1/orders", "cg-clinic",
                        ORDER | {"scheduled_at": (now - timedelta(days=2)).isoformat()}, status=201)
    await api.ok("POST", "/api/v1/orders", "cg-clinic",
                 ORDER | {"scheduled_at": (now - timedelta(hours=2)).isoformat()}, status=201)  # not yet overdue
    linked = await api.ok("POST", "/api/v1/orders", "cg-clinic",
                          ORDER | {"scheduled_at": (now - timedelta(days=3)).isoformat()}, status=201)
    async with api.rt.store.transaction() as tx:  # its study came
        await tx.update("orders", linked["id"], {"study_uid": "1.2.826.0.1.100.1"})
    overdue = await api.ok("GET", "/api/v1/orders?overdue=true", "cg-clinic")
    assert [o["id"] for o in overdue["items"]] == [late["id"]]
    assert (await api.ok("GET", "/api/v1/orders?overdue=true", "db-clinic"))["items"] == []


RESIDENT_ID = "11010519491231002X"  # the standard's worked example (GB 11643), check character X


async def test_the_resident_id_is_checked_shown_masked_and_in_no_event_or_audit_record(api, contract):  # noqa: F811
    order = await api.ok("POST", "/api/v1/orders", "cg-clinic", ORDER | {"resident_id": RESIDENT_ID.lower()},
                         status=201)
    assert order["resident_id"] == "1101**********002X"
    assert (await api.ok("GET", f"/api/v1/orders/{order['id']}", "cg-clinic"))["resident_id"] == "1101**********002X"
    assert (await api.ok("GET", "/api/v1/orders", "cg-clinic"))["items"][0]["resident_id"] == "1101**********002X"
    assert (await api.rt.store.get("orders", order["id"]))["resident_id"] == RESIDENT_ID  # kept whole for the worklist
    for wrong, why in (("110105194912310021", "check digit"), ("11010519491331002X", "birth date"),
                       ("1101051949", "18 characters")):
        status, problem, _ = await api.call("POST", "/api/v1/orders", user="cg-clinic",
                                            json=ORDER | {"resident_id": wrong})
        assert status == 422 and why in problem["detail"] and wrong not in problem["detail"], problem
    changed = await api.ok("POST", f"/api/v1/orders/{order['id']}/change", "cg-clinic",
                           {"changes": {"resident_id": None}})
    assert changed["resident_id"] is None
    logged = [e.event.to_dict() for e in await api.rt.store.read_log(0, limit=1000)]
    audited = await api.rt.store.find("audit", {})
    assert RESIDENT_ID not in repr(logged) + repr(audited)
    assert "110105194912310021" not in repr(audited)  # nor a refused one
