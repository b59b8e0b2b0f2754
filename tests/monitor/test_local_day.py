"""The monitor's "today" and hourly trend follow the consortium's time zone (``rt.local_time``),
not a fixed offset of their own: readings signed a minute either side of local midnight land on
their own local day, and the trend's hours start at local full hours."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from services.core.localtime import LocalTime
from services.monitor.figures import Window, trend
from services.monitor.readmodel import iso, parse_time
from services.monitor.service import RETIRED_OFFSET, settings_of

from .conftest import start_world, stop_world

CT = "1.2.826.0.1.900."


def test_the_local_day_starts_at_the_zones_midnight():
    now = parse_time("2026-11-18T16:30:00Z")  # 00:30 on the 19th in Beijing, 22:30 on the 18th in Urumqi
    assert iso(Window.at(now, ZoneInfo("Asia/Shanghai")).day_start) == "2026-11-18T16:00:00.000Z"
    assert iso(Window.at(now, ZoneInfo("Asia/Urumqi")).day_start) == "2026-11-17T18:00:00.000Z"
    assert iso(Window.at(now, ZoneInfo("UTC")).day_start) == "2026-11-18T00:00:00.000Z"
    # a daylight-saving zone: the day of the spring change is 23 hours long and starts at CET midnight
    berlin = Window.at(parse_time("2026-03-29T12:00:00Z"), ZoneInfo("Europe/Berlin"))
    assert iso(berlin.day_start) == "2026-03-28T23:00:00.000Z" and berlin.utc_offset == 7200


def test_trend_hours_are_local_full_hours():
    # India: UTC+05:30, so a local hour starts at half past a UTC hour
    now = parse_time("2026-11-18T10:45:00Z")  # 16:15 in Kolkata
    rows = [{"queued_at": "2026-11-18T10:29:00.000Z"}, {"queued_at": "2026-11-18T10:31:00.000Z"}]
    points = trend(rows, Window.at(now, ZoneInfo("Asia/Kolkata")), hours=2)
    assert [(p["hour"], p["queued"]) for p in points] == [("2026-11-18T09:30:00.000Z", 1),
                                                          ("2026-11-18T10:30:00.000Z", 1)]


async def signed_either_side_of_midnight(world, midnight: str) -> None:
    """Two readings at county-imaging, signed one minute before and one after ``midnight`` (UTC)."""
    for i in (1, 2):
        await world.add_study(f"{CT}{i}", "chengguan-thc", ["CT"])
    await world.settle()
    world.clock.now = parse_time(midnight) - 20 * 60
    first = await world.request(f"{CT}1", "cg-clinic")
    second = await world.request(f"{CT}2", "cg-clinic")
    await world.claim(first["id"], "dr-wang")
    await world.claim(second["id"], "dr-li")
    world.clock.now = parse_time(midnight) - 60
    await world.sign(first["id"], "dr-wang")
    world.clock.now = parse_time(midnight) + 60
    await world.sign(second["id"], "dr-li")
    world.clock.advance(30 * 60)
    await world.settle()


async def today_in(tmp_path, timezone: str | None, midnight: str) -> dict:
    world, services = await start_world(tmp_path, timezone=timezone)
    try:
        await signed_either_side_of_midnight(world, midnight)
        status, body = await world.get("/api/v1/monitor/centres", "coord-county")
        assert status == 200, body
        return body
    finally:
        await stop_world(world, services)


async def test_readings_around_local_midnight_land_on_their_local_day_in_beijing(tmp_path):
    # 15:59 UTC is 23:59 in Beijing (yesterday), 16:01 UTC is 00:01 (today)
    body = await today_in(tmp_path, None, "2026-11-18T16:00:00Z")
    assert body["timezone"] == "Asia/Shanghai" and body["day_start"] == "2026-11-18T16:00:00.000Z"
    county = body["centres"][0]
    assert county["signed_today"] == 1 and county["turnaround"]["today"]["count"] == 1
    assert {r["reader_id"]: r["signed_today"] for r in county["readers"]} == {"dr-li": 1, "dr-wang": 0}


async def test_readings_around_local_midnight_follow_the_consortium_zone(tmp_path):
    # YILIAN_TIMEZONE=Asia/Urumqi (UTC+6): midnight there is 18:00 UTC, not Beijing's 16:00
    body = await today_in(tmp_path, "Asia/Urumqi", "2026-11-18T18:00:00Z")
    county = body["centres"][0]
    assert county["signed_today"] == 1 and county["turnaround"]["today"]["count"] == 1
    assert {r["reader_id"]: r["signed_today"] for r in county["readers"]} == {"dr-li": 1, "dr-wang": 0}
    assert body["timezone"] == "Asia/Urumqi" and body["day_start"] == "2026-11-18T18:00:00.000Z"


def test_the_retired_offset_variable_is_ignored_with_a_warning(monkeypatch, caplog):
    rt = SimpleNamespace(shared={}, local_time=LocalTime.named("Asia/Urumqi"))
    monkeypatch.setenv(RETIRED_OFFSET, "8")
    with caplog.at_level(logging.WARNING, logger="yilian.monitor"):
        settings = settings_of(rt)
    assert not hasattr(settings, "utc_offset_hours")
    [record] = [r for r in caplog.records if RETIRED_OFFSET in r.getMessage()]
    assert "ignored" in record.getMessage() and "Asia/Urumqi" in record.getMessage()
