"""The same-patient rule of 结果互认 (I/O free)."""

from services.api.scope import same_patient


def test_same_organisation_and_patient_id_or_name_plus_birth_date():
    study = {"id": "1.2", "organization": "cg", "patient_id": "P1", "patient_name": "Zhang^San",
             "patient_name_key": "ZHANG^SAN", "birth_date": "19600101"}
    assert same_patient(study) == {"$or": [{"organization": "cg", "patient_id": "P1"},
                                           {"patient_name_key": "ZHANG^SAN", "birth_date": "19600101"}]}


def test_a_name_or_a_birth_date_alone_never_matches_across_sites():
    no_birth = {"id": "1.2", "organization": "cg", "patient_id": "P1", "patient_name": "Zhang^San"}
    assert same_patient(no_birth) == {"$or": [{"organization": "cg", "patient_id": "P1"}]}
    no_name = {"id": "1.2", "organization": "cg", "patient_id": "P1", "patient_name": "^", "birth_date": "19600101"}
    assert same_patient(no_name) == {"$or": [{"organization": "cg", "patient_id": "P1"}]}


def test_an_empty_patient_id_does_not_join_every_anonymous_study():
    anonymous = {"id": "1.2", "organization": "cg", "patient_id": "", "patient_name": ""}
    assert same_patient(anonymous) == {"$or": [{"id": "1.2"}]}
    named = {"id": "1.2", "organization": "cg", "patient_id": "", "patient_name": "Li^Si", "birth_date": "19700202"}
    assert same_patient(named) == {"$or": [{"patient_name_key": "LI^SI", "birth_date": "19700202"}]}
