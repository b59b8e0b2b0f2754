"""I/O-free parts of delivery: the retry policy, the result documents, the SR of an addendum,
a consultation's opinion as a result, the webhook signature."""

from __future__ import annotations

import hashlib
import hmac
import random
import time

import pytest

from services.core.consortium import load_consortium
from services.delivery.channels.webhook import body_of, sign
from services.delivery.model import channels_for, result_from_consultation, result_from_report, uid_for
from services.delivery.retry import Backoff
from services.delivery.settings import DeliverySettings
from services.delivery.sr import BASIC_TEXT_SR, build_sr

from ..support import EXAMPLE_CONSORTIUM, wait_for_sync

REPORT = {"report_id": "rp-1", "request_id": "rr-1", "study_uid": "1.2.3", "organization": "chengguan-thc",
          "centre": "county-imaging", "kind": "imaging", "reader_id": "dr-wang", "reader_name": "王建国",
          "signed_at": "2026-11-23T10:15:30.123Z", "findings": "所见", "impression": "意见", "critical": False,
          "critical_category": None, "addendum_of": None, "patient_id": "P1", "patient_name": "张^三"}


def test_backoff_is_full_jitter_capped_and_gives_up_at_the_horizon():
    b = Backoff(first_delay=1.0, max_delay=30.0, horizon=100.0)
    assert [b.cap(n) for n in (1, 2, 3, 6, 50)] == [1.0, 2.0, 4.0, 30.0, 30.0]
    rng = random.Random(7)
    waits = [b.delay(4, rng) for _ in range(2000)]
    assert 0 <= min(waits) < 0.1 and 7.9 < max(waits) <= 8.0  # uniform over [0, cap]
    assert 3.5 < sum(waits) / len(waits) < 4.5
    assert b.next_attempt(attempt=1, now=10.0, started=0.0, rng=rng) <= 11.0
    assert b.next_attempt(attempt=20, now=95.0, started=0.0, rng=rng) <= 100.0  # a last try at the horizon
    assert b.next_attempt(attempt=21, now=100.0, started=0.0) is None  # then a dead letter


def test_uids_are_fixed_by_the_result_id():
    a, b = result_from_report(REPORT, at="t"), result_from_report(REPORT, at="later")
    assert a["sr_sop_instance_uid"] == b["sr_sop_instance_uid"] == uid_for("rp-1", "sr")
    assert len({a["sr_sop_instance_uid"], a["pdf_sop_instance_uid"], a["sr_series_uid"], a["pdf_series_uid"]}) == 4


def test_addendum_sr_names_the_corrected_report_as_predecessor():
    addendum = result_from_report({**REPORT, "report_id": "rp-2", "addendum_of": "rp-1", "findings": "补充"}, at="t")
    ds = build_sr(addendum, study={}, evidence=[], created="2026-11-23T10:20:00.000Z", institution="x", station="Y")
    pred = ds.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pred.ReferencedSOPInstanceUID == uid_for("rp-1", "sr") and pred.ReferencedSOPClassUID == BASIC_TEXT_SR
    assert ds.SOPInstanceUID == uid_for("rp-2", "sr") and addendum["source"] == "addendum"


def test_consultation_opinion_becomes_a_result_for_the_requesting_clinic():
    r = result_from_consultation({"consultation_id": "cs-1", "opinion_id": "op-1", "organization": "dongba-thc",
                                  "centre": "county-imaging", "study_uids": [], "patient_id": "D1",
                                  "patient_name": "王^五", "signed_at": "2026-11-23T10:00:00.000Z",
                                  "signers": [{"id": "dr-wang", "name": "王建国"}, {"id": "dr-li", "name": "李秀英"}],
                                  "assessment": "考虑冠心病", "recommendations": {"disposition": "up_refer", "text": "建议上转县医院心内科"}, "critical": False,
                                  "lead": "dr-wang"}, at="t")
    assert r["id"] == "op-1" and r["reader_name"] == "王建国、李秀英" and r["kind"] == "consultation"
    assert r["impression"] == "建议上转县医院心内科" and r["findings"] == "考虑冠心病"
    # no study to attach an SR to: inbox only (dongba-thc has no webhook)
    assert set(channels_for(load_consortium(EXAMPLE_CONSORTIUM), r, study_known=False)) == {"inbox"}


def test_webhook_signature_is_hmac_sha256_of_the_exact_body():
    body = body_of({"result_id": "rp-1", "findings": "右下肺炎"})
    assert "右下肺炎".encode() in body  # UTF-8, not \\u escapes
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"


def test_missing_font_is_a_clear_error_at_start(tmp_path):
    with pytest.raises(SystemExit, match="fonts-wqy-microhei"):
        DeliverySettings(font=str(tmp_path / "none.ttc")).check()


def test_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("YILIAN_DELIVERY_HORIZON_SECONDS", "soon")
    with pytest.raises(SystemExit, match="YILIAN_DELIVERY_HORIZON_SECONDS"):
        DeliverySettings.from_env()


def test_the_font_subset_is_built_once_in_a_process_of_its_own(tmp_path):
    from services.delivery.fonts import Fonts
    fonts = Fonts(DeliverySettings().font, tmp_path / "cache")
    assert fonts.for_text("右侧肋骨骨折") == fonts.full  # until the subset exists
    cpu = time.process_time()
    fonts.prepare()
    wait_for_sync(fonts.subset_path.exists, timeout=120, interval=0.1, what="the font subset")
    # About 2 s of CPU went into the subset; hardly any of it was this process's (nor its GIL).
    assert time.process_time() - cpu < 0.5
    assert fonts.for_text("右侧肋骨骨折", "王小明") == str(fonts.subset_path)
    assert fonts.for_text("患者 龑") == fonts.full  # a character outside GB2312
    again = Fonts(DeliverySettings().font, tmp_path / "cache")
    again.prepare()  # cached: nothing to build
    assert again._building is None
