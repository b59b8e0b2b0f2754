"""The I/O-free part of ingest: header reading, validation, index documents."""

from __future__ import annotations

import pytest

from services.pacs_gateway import model, statuses
from services.pacs_gateway.model import StoreRefused

from ..dicom_samples import chinese_instance, make_instance


def test_header_decodes_text_with_the_datasets_character_set():
    header = model.header_of(chinese_instance("GBK", patient_id="P9"))
    assert header.patient_name == "李^四" and header.specific_character_set == "GBK"
    assert model.name_key("wang^xiaoming") == "WANG^XIAOMING"


@pytest.mark.parametrize(("keyword", "value", "comment"), [
    ("StudyInstanceUID", "", "Study Instance UID missing"),
    ("SeriesInstanceUID", "1.2.3.", "Series Instance UID is not a valid UID"),
    ("SOPInstanceUID", "1.02.3", "SOP Instance UID is not a valid UID"),
])
def test_bad_uids_are_cannot_understand(keyword, value, comment):
    ds = make_instance()
    setattr(ds, keyword, value)
    with pytest.raises(StoreRefused) as refused:
        model.header_of(ds)
    assert refused.value.status == statuses.CANNOT_UNDERSTAND_BAD_UID and refused.value.comment == comment


def test_check_compares_with_the_request_and_the_limit():
    header = model.header_of(make_instance(sop_instance_uid="1.2.3.4"))
    model.check(header, requested_sop_class=header.sop_class_uid, requested_sop_instance="1.2.3.4", size=10,
                max_size=10)
    with pytest.raises(StoreRefused) as mismatch:
        model.check(header, requested_sop_class=header.sop_class_uid, requested_sop_instance="1.2.3.5", size=1,
                    max_size=10)
    assert mismatch.value.status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    with pytest.raises(StoreRefused) as large:
        model.check(header, requested_sop_class=header.sop_class_uid, requested_sop_instance="1.2.3.4", size=11,
                    max_size=10)
    assert large.value.status == statuses.OUT_OF_RESOURCES


def test_study_document_counts_series_and_reopens():
    h1 = model.header_of(make_instance(study_uid="1.2.9", modality="CT"))
    study = model.study_doc(None, h1, organization="org", added=1, new_series=True, now="t1")
    assert (study["series_count"], study["instance_count"], study["state"], study["revision"]) == (1, 1, "receiving", 0)
    announced = {**study, "state": "received", "revision": 1}
    h2 = model.header_of(make_instance(study_uid="1.2.9", modality="ECG"))
    again = model.study_doc(announced, h2, organization="org", added=1, new_series=True, now="t2")
    assert again["state"] == "receiving" and again["revision"] == 1 and again["last_update_at"] == "t2"
    assert again["modalities"] == ["CT", "ECG"] and again["series_count"] == 2
    assert model.received_event_data({**again, "revision": 2})["instance_count"] == 2
