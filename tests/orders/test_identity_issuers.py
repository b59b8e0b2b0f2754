"""The national identifiers that make the consortium patient identity are the consortium file's
(``identity.issuers``, docs/identity.md), each with its check; the defaults as before.  End to
end: DCMTK storescu to the real gateway, read back from the index."""

from __future__ import annotations

import pytest

from services.core import identity
from services.core.consortium import ConfigError, parse_consortium

from ..dicom_samples import storescu
from ..gateway.conftest import make_gateway, run  # noqa: F401 - the fixture is used by name
from ..support import EXAMPLE_CONSORTIUM, wait_for
from .test_identity import ZHANG, instance

CONFIGURED = """
identity:
  issuers:
    - {name: CN_RESIDENT_ID, check: resident_id}
    - {name: CN_MEDICARE, check: regex, pattern: "[0-9]{10}"}
"""


def _parsed(extra: str):
    return parse_consortium(EXAMPLE_CONSORTIUM.read_text("utf-8") + extra)


def test_the_defaults_are_the_resident_id_and_the_health_card():
    assert _parsed("").identity_issuers == identity.ISSUERS
    assert [i.name for i in identity.ISSUERS] == ["CN_RESIDENT_ID", "CN_HEALTH_CARD"]


def test_configured_issuers_each_with_its_check():
    issuers = _parsed(CONFIGURED).identity_issuers
    assert identity.key("CN_MEDICARE", "0123456789", issuers) == "CN_MEDICARE|0123456789"
    assert identity.key("CN_MEDICARE", "012345678", issuers) is None  # the whole value must match
    assert identity.key("CN_MEDICARE", "0123456789X", issuers) is None
    assert identity.key("CN_RESIDENT_ID", ZHANG, issuers) == f"CN_RESIDENT_ID|{ZHANG}"
    assert identity.key("CN_RESIDENT_ID", ZHANG[:-1] + "0", issuers) is None  # its check digit still
    assert identity.key("CN_HEALTH_CARD", "H12345678", issuers) is None  # not accepted in this consortium


@pytest.mark.parametrize("entry,message", [
    ("{name: CN_X, check: luhn}", "must be one of resident_id, health_card, regex"),
    ("{name: CN_X, check: regex}", "a pattern is given with check: regex, and only then"),
    ("{name: CN_X, check: health_card, pattern: '[0-9]+'}", "a pattern is given with check: regex, and only then"),
    ("{name: CN_X, check: regex, pattern: '[0-9'}", "is not a regular expression"),
    ("{name: cn-x, check: health_card}", "is malformed"),
    ("{name: CN_X, check: health_card, salt: 1}", "unknown key 'salt'"),
])
def test_a_bad_issuer_is_refused_naming_its_line(entry, message):
    with pytest.raises(ConfigError, match=message) as caught:
        _parsed(f"\nidentity:\n  issuers:\n    - {{name: CN_OK, check: resident_id}}\n    - {entry}\n")
    assert caught.value.line is not None and caught.value.line > 1


def test_an_issuer_listed_twice_or_none_is_refused():
    with pytest.raises(ConfigError, match="listed twice"):
        _parsed("\nidentity:\n  issuers:\n    - {name: CN_A, check: resident_id}\n    - {name: CN_A, check: health_card}\n")
    with pytest.raises(ConfigError, match="at least one issuer"):
        _parsed("\nidentity:\n  issuers: []\n")


@pytest.mark.dcmtk
async def test_the_gateway_indexes_the_identity_of_a_configured_issuer_only(make_gateway, tmp_path):  # noqa: F811
    gw = await make_gateway(study_quiet_seconds=30)
    gw.rt.consortium = _parsed(CONFIGURED)  # as loaded from a file with that section (or changed by an admin)
    medicare, medicare_file = instance(tmp_path, "mc", patient_id="CG010", national="0123456789", issuer="CN_MEDICARE")
    short, short_file = instance(tmp_path, "sh", patient_id="CG011", national="012345678", issuer="CN_MEDICARE")
    card, card_file = instance(tmp_path, "hc", patient_id="CG012", national="H12345678", issuer="CN_HEALTH_CARD")
    sent = await run(storescu, gw.port, [medicare_file, short_file, card_file], calling="CG_CT1")
    assert sent.returncode == 0, sent.output
    uids = [d.StudyInstanceUID for d in (medicare, short, card)]

    async def indexed() -> bool:
        return all([await gw.rt.store.get("studies", uid) for uid in uids])
    await wait_for(indexed, timeout=10, what="the three studies indexed")
    identities = [(await gw.rt.store.get("studies", uid)).get("identity") for uid in uids]
    assert identities == ["CN_MEDICARE|0123456789", "", ""]
    assert (await gw.rt.store.get("patients", "chengguan-thc|CG010"))["identity"] == "CN_MEDICARE|0123456789"
