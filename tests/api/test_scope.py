"""The same-patient rule of 结果互认 (I/O free): Patient ID within a site, the consortium identity
(or a confirmed link) across sites, never name + birth date."""

from services.api.scope import same_patient

ZHANG = "CN_RESIDENT_ID|410101196001011234"


def test_same_organisation_and_patient_id_or_the_same_consortium_identity():
    study = {"id": "1.2", "organization": "cg", "patient_id": "P1", "patient_name": "Zhang^San",
             "patient_name_key": "ZHANG^SAN", "birth_date": "19600101", "identity": ZHANG}
    assert same_patient(study) == {"$or": [{"organization": "cg", "patient_id": "P1"}, {"identity": ZHANG}]}


def test_name_and_birth_date_never_match_across_sites():
    study = {"id": "1.2", "organization": "cg", "patient_id": "P1", "patient_name": "Zhang^San",
             "patient_name_key": "ZHANG^SAN", "birth_date": "19600101"}
    assert same_patient(study) == {"$or": [{"organization": "cg", "patient_id": "P1"}]}


def test_a_confirmed_link_matches_the_other_sites_patient():
    study = {"id": "1.2", "organization": "cg", "patient_id": "P1"}
    assert same_patient(study, ["hm|H7"]) == {"$or": [{"organization": "cg", "patient_id": "P1"},
                                                      {"organization": "hm", "patient_id": "H7"}]}


def test_an_empty_patient_id_does_not_join_every_anonymous_study():
    anonymous = {"id": "1.2", "organization": "cg", "patient_id": "", "patient_name": ""}
    assert same_patient(anonymous) == {"$or": [{"id": "1.2"}]}
    named = {"id": "1.2", "organization": "cg", "patient_id": "", "patient_name": "Li^Si", "birth_date": "19700202"}
    assert same_patient(named) == {"$or": [{"id": "1.2"}]}
    identified = {"id": "1.2", "organization": "cg", "patient_id": "", "identity": ZHANG}
    assert same_patient(identified) == {"$or": [{"identity": ZHANG}]}
