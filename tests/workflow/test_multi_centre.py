"""A reader of several centres (多点执业): every reading rule follows each task's centre.

The example consortium's dr-zhou (住院医师) reads for county-imaging (``sign_off: 主治医师``: he
submits) and city-imaging (no sign_off: he releases); dr-li reads for county-imaging only.
"""

from __future__ import annotations

import pytest

from services.workflow import queries
from services.workflow.commands import AssignToReader, Claim, MoveToCentre, RequestReading, Review, Sign
from services.workflow.errors import NotFound
from services.workflow.service import execute

COUNTY = "1.2.826.0.1.3680043.8.498.810"
CITY = "1.2.826.0.1.3680043.8.498.811"
REPORT = {"findings": "两肺纹理清晰。", "impression": "心肺未见异常。"}


async def test_worklist_claim_sign_and_review_follow_each_tasks_centre(world):
    ids = []
    for uid in (COUNTY, CITY):
        await world.add_study(uid, "chengguan-thc", ["DX"], announce=False)
        ids.append((await execute(world.rt, RequestReading(uid, "imaging", "routine", "咳嗽"),
                                  actor=world.who("cg-clinic")))["id"])
    county, city = ids
    await execute(world.rt, MoveToCentre(city, "city-imaging", "县中心积压"), actor=world.who("admin"))

    zhou, li = world.who("dr-zhou"), world.who("dr-li")
    assert zhou.centre_ids == ("county-imaging", "city-imaging")
    both = await queries.worklist(world.store, centre=zhou.centre_where())
    assert {t["id"] for t in both} == {county, city}
    assert [t["id"] for t in await queries.worklist(world.store, centre=li.centre_where())] == [county]
    with pytest.raises(NotFound):  # another centre's task is not his
        await execute(world.rt, Claim(city), actor=li)

    # The city centre has no sign_off: the resident's report is released at once, signed for the city.
    await execute(world.rt, Claim(city), actor=zhou)
    signed = await execute(world.rt, Sign(city, **REPORT), actor=zhou)
    assert signed["state"] == "signed"
    report = await queries.report(world.store, signed["report_id"])
    assert [(s["id"], s["centre"]) for s in report["signers"]] == [("dr-zhou", "city-imaging")]
    # The county centre releases from 主治医师 up: the same resident submits there, dr-li reviews.
    await execute(world.rt, Claim(county), actor=zhou)
    assert (await execute(world.rt, Sign(county, **REPORT), actor=zhou))["state"] == "submitted"
    released = await execute(world.rt, Review(county, release=True), actor=li)
    report = await queries.report(world.store, released["report_id"])
    assert [(s["role"], s["centre"]) for s in report["signers"]] == [("reporting", "county-imaging"),
                                                                     ("reviewing", "county-imaging")]


async def test_a_coordinator_assigns_to_a_reader_of_several_centres(world):
    await world.add_study(CITY, "chengguan-thc", ["DX"], announce=False)
    rid = (await execute(world.rt, RequestReading(CITY, "imaging", "routine", "咳嗽"),
                         actor=world.who("cg-clinic")))["id"]
    await execute(world.rt, MoveToCentre(rid, "city-imaging", "县中心积压"), actor=world.who("admin"))
    doc = await execute(world.rt, AssignToReader(rid, "dr-zhou", "他周三在市中心"), actor=world.who("coord-city"))
    assert doc["claimed_by"] == "dr-zhou"
