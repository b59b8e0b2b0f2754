"""The edge's status for people without a browser: the link state's rules, and the page's
escaping, refusal reasons, local times and what it never shows (no patient name)."""

from __future__ import annotations

import re

from services.core.localtime import LocalTime
from services.edge import page
from services.edge.linkstate import LinkWatch


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_an_outage_dates_from_its_first_failure_and_a_refusal_is_its_own_state():
    clock = Clock(1_796_263_200.0)  # 2026-12-03T02:00:00Z
    watch = LinkWatch(clock)
    assert watch.as_dict()["state"] == "unknown"
    watch.saw(200)
    assert watch.as_dict()["state"] == "connected"
    clock.t += 60
    watch.saw(None, "ClientOSError: reset")
    clock.t += 120
    watch.saw(503, "GET /dicomweb: HTTP 503")  # still the same outage: since stays at its start
    assert watch.as_dict() == {"state": "outage", "since": "2026-12-03T02:01:00.000Z",
                               "last_answer_at": "2026-12-03T02:00:00.000Z", "last_error": "GET /dicomweb: HTTP 503"}
    clock.t += 10
    watch.saw(404)  # an answer, even "no such study", is a working link
    assert watch.as_dict()["state"] == "connected" and watch.as_dict()["since"] == "2026-12-03T02:03:10.000Z"
    watch.saw(401, "POST /api/v1/edge/heartbeat: HTTP 401")
    assert watch.as_dict()["state"] == "refused"


def test_the_link_back_is_told_once_after_an_outage_or_a_refusal_not_at_the_first_answer():
    restored: list[str] = []
    watch = LinkWatch(Clock(1_796_263_200.0))
    watch.on_restored(lambda: restored.append(watch.state))
    watch.saw(200)  # the first answer of all: nothing was waiting
    watch.saw(None, "reset")
    watch.saw(503, "HTTP 503")
    assert restored == []
    watch.saw(404)  # answered again: once
    watch.saw(200)
    assert restored == ["connected"]
    watch.saw(401, "revoked")
    watch.saw(200)  # the token taken again
    assert restored == ["connected", "connected"]


def status(**over) -> dict:
    base = {"link": {"state": "outage", "since": "2026-12-03T02:00:00Z", "last_error": "reset <b>by</b> peer"},
            "backlog_studies": 1, "backlog_instances": 7, "bytes_pending": 2_500_000, "rate_bytes_per_second": 52_900,
            "last_success_at": "2026-12-03T01:59:58.120Z",
            "studies": [{"id": "1.2.3", "rank": 0, "instances": 10, "sent": 2, "refused": ["1.2.3.9"],
                         "refused_reasons": {"1.2.3.9": "0xA900"}, "attempts": 3, "last_error": "<script>x</script>",
                         "first_received_at": "2026-12-03T01:58:00Z", "next_attempt_at": "2026-12-03T02:05:00Z",
                         "study": page._describe({"modalities": ["DX"], "accession_number": "CG001",
                                                  "study_description": "胸部<正位>", "patient_name": "王^小明",
                                                  "patient_id": "P-123"})}],
            "recent": []}
    return {**base, **over}


def test_the_page_escapes_shows_why_an_instance_was_refused_and_local_times_and_no_patient():
    html = page.render(status(), tz=LocalTime.named(), organization_name="城关镇卫生院", now="2026-12-03T02:05:00Z")
    assert "<script>x" not in html and "&lt;script&gt;x" in html and "reset &lt;b&gt;by" in html
    assert "胸部&lt;正位&gt;" in html and "CG001" in html
    assert "0xA900 数据集与SOP类不符 data set does not match SOP class" in html
    assert "2026-12-03 10:00:00 +08:00" in html  # outage since, in China Standard Time with its offset
    assert "已 5 分钟" in html  # and for how long
    assert "王" not in html and "P-123" not in html  # the page may be seen on the clinic's network
    assert 'value="30"' in html  # (2 sent + 1 refused) of 10
    assert "2.5 MB" in html and "52.9 kB/s" in html
    # The CSP allows no inline script and only the page's own style: nothing may rely on them.
    assert not re.search(r"<script(?![^>]*\ssrc=\"/page\.js\")", html) and 'style="' not in html
    assert page._sha(page.STYLE) in page.CSP and "script-src 'self'" in page.CSP


def test_a_refusal_code_reads_as_words():
    assert page.refusal("0x0124") == "0x0124 不允许 refused: not authorized"
    assert page.refusal("0xC122").startswith("0xC122 中心无法处理")
    assert page.refusal("") == ""


def test_the_page_shows_results_for_the_terminal_and_the_worklist_copy():
    html = page.render(status(terminal="CG_TERM@192.168.1.20:104", results_pending=2, results_delivered=5,
                              results_refused=0, results_last_delivered_at="2026-12-03T01:30:00Z",
                              results_last_error="association refused <by> CG_TERM",
                              worklist={"items": 4, "synced_at": "2026-12-03T01:59:00Z", "steps_pending": 1,
                                        "steps_refused": 0, "last_error": "LinkDown: reset"}),
                       tz=LocalTime.named(), organization_name="城关镇卫生院", now="2026-12-03T02:05:00Z")
    results = html.split('<div id="results">')[1].split('<div id="worklist">')[0]
    assert 'data-kpi="results_pending"><b>2</b>' in results and 'data-kpi="results_delivered"><b>5</b>' in results
    assert "CG_TERM@192.168.1.20:104" in results and "association refused &lt;by&gt;" in results
    assert "2026-12-03 09:30:00 +08:00" in results
    worklist = html.split('<div id="worklist">')[1]
    assert 'data-kpi="worklist_items"><b>4</b>' in worklist and 'data-kpi="steps_pending"><b>1</b>' in worklist
    assert "2026-12-03 09:59:00 +08:00" in worklist and "LinkDown: reset" in worklist
    # An edge status without them (an older status) renders without the sections.
    assert 'id="results"' not in page.render(status(), tz=LocalTime.named(), organization_name="x",
                                             now="2026-12-03T02:05:00Z")
