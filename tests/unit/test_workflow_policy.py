"""Who sees which reading requests and reports, and which roles may act."""

from __future__ import annotations

import pytest

from services.core.auth import Principal
from services.workflow import policy

REQUEST = {"organization": "chengguan-thc", "centre": "county-imaging"}


def p(role: str, organization: str = "county-hospital", centre: str | None = None) -> Principal:
    return Principal("u", role, organization, centre, "t")


@pytest.mark.parametrize("who,sees", [
    (p("clinic", "chengguan-thc"), True), (p("clinic", "dongba-thc"), False),
    (p("reader", centre="county-imaging"), True), (p("reader", centre="county-ecg"), False),
    (p("coordinator", centre="county-imaging"), True), (p("coordinator", "city-hospital", "city-imaging"), False),
    (p("admin"), True), (p("auditor"), False), (p("reader", centre=None), False)])
def test_scope_of_requests_and_reports(who, sees):
    assert policy.sees_request(who, REQUEST) is sees
    assert policy.sees_report(who, REQUEST) is sees


def test_only_readers_do_medical_acts_and_auditors_nothing():
    for action in ("claim", "save_draft", "sign", "addendum", "escalate", "return"):
        assert [r for r in ("clinic", "reader", "coordinator", "admin", "auditor") if policy.may(p(r), action)] \
            == ["reader"]
    assert not any(policy.may(p("auditor"), a) for a in policy.ROLES_FOR)
    assert policy.may(p("coordinator"), "move") and not policy.may(p("reader"), "move")
    assert policy.may(p("clinic"), "cancel") and not policy.may(p("reader"), "cancel")


def test_study_scope_for_requests():
    assert policy.sees_study(p("clinic", "chengguan-thc"), {"organization": "chengguan-thc"})
    assert not policy.sees_study(p("clinic", "dongba-thc"), {"organization": "chengguan-thc"})
    assert not policy.sees_study(p("reader", centre="county-imaging"), {"organization": "chengguan-thc"})
    assert policy.sees_study(p("admin"), {"organization": "chengguan-thc"})
