"""The consortium loader: every validation error is a ConfigError naming the line it found."""

from __future__ import annotations

import pytest

from services.core.consortium import ConfigError, load_consortium, parse_consortium, parse_duration

from .support import EXAMPLE_CONSORTIUM

# A small, valid consortium: city -> county -> town -> village.  Tests edit one line of it and
# check the error names that line.
BASE = """\
consortium:
  id: test
  name: 测试医共体
organizations:
  - id: city
    name: City hospital
    level: city
    workstation_aes: [CITY_RWS1]
  - id: county
    name: County hospital
    level: county
    parent: city
    modality_aes: [COUNTY_CT1]
    scp: {ae_title: COUNTY_PACS, host: 127.0.0.1, port: 104}
  - id: town
    name: Town health centre
    level: township
    parent: county
    modality_aes: [TOWN_DR1, TOWN_ECG1]
  - id: village
    name: Village clinic
    level: village
    parent: town
    modality_aes: [VIL_ECG1]
centres:
  - id: county-imaging
    name: County imaging
    organization: county
    kinds: [imaging]
    escalation: city-imaging
  - id: county-ecg
    name: County ECG
    organization: county
    kinds: [ecg]
  - id: city-imaging
    name: City imaging
    organization: city
    kinds: [imaging]
routes:
  - kind: imaging
    origins: [county]
    centre: county-imaging
    overflow: [city-imaging]
  - kind: imaging
    origins: [town]
    modalities: [DX]
    centre: city-imaging
  - kind: ecg
    centre: county-ecg
sla:
  imaging: {stat: 30m, urgent: 2h, routine: 24h}
  ecg: {stat: 15m, urgent: 1h, routine: 1d}
site_rules:
  - {organization: village, kind: ecg, modalities: [ECG]}
users:
  - {id: admin, name: Admin, role: admin, organization: county}
  - {id: dr-wang, name: 王建国, role: reader, organization: county, centre: county-imaging}
  - {id: town-clinic, name: Town clinic, role: clinic, organization: town}
"""


def edit(old: str, new: str, *, text: str = BASE) -> tuple[str, int]:
    """``text`` with the one line containing ``old`` replaced by ``new``; returns (text, its line number)."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if old in line]
    assert len(hits) == 1, f"{old!r} must occur on exactly one line of the base, found {len(hits)}"
    lines[hits[0]] = lines[hits[0]].replace(old, new)
    return "\n".join(lines) + "\n", hits[0] + 1


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    found = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return found[occurrence - 1]


def fails(text: str, line: int, *words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_consortium(text, source="test.yaml")
    err = info.value
    assert err.line == line, f"expected line {line}, got {err}"
    assert str(err).startswith(f"test.yaml:{line}: "), str(err)
    for word in words:
        assert word in str(err), f"{word!r} not in {err}"
    return err


def test_base_is_valid():
    c = parse_consortium(BASE)
    assert set(c.organizations) == {"city", "county", "town", "village"}
    assert c.organization_of_ae("TOWN_DR1").id == "town"
    assert c.endpoint("COUNTY_PACS").port == 104
    assert c.ancestors("village") == ["village", "town", "county", "city"]
    assert c.users["dr-wang"].centre == "county-imaging"
    assert c.site_rules[0].priority == "routine"  # the default
    assert c.priority_boost == ("green_channel", "signed_resident")  # the default


# --- unknown keys ----------------------------------------------------------------------------

@pytest.mark.parametrize("old,new,word", [
    ("  name: 测试医共体", "  name: 测试医共体\n  region: 河南", "region"),
    ("    level: village", "    levle: village", "levle"),
    ("    kinds: [ecg]", "    kind: [ecg]", "kind"),
    ("    centre: county-ecg", "    center: county-ecg", "center"),
    ("port: 104}", "port: 104, tsl: true}", "tsl"),
    ("site_rules:", "site_rule:", "site_rule"),
])
def test_unknown_key_names_its_line(old, new, word):
    text, line = edit(old, new)
    line = line_of(text, word) if word == "region" else line
    err = fails(text, line, "unknown key", repr(word))
    assert "allowed:" in str(err)


def test_missing_required_key_names_the_mapping():
    text, _ = edit("    level: village", "")
    fails(text, line_of(text, "- id: village"), "lacks required key 'level'")


def test_duplicate_key():
    text, line = edit("    parent: town", "    parent: town\n    parent: county")
    fails(text, line + 1, "duplicate key 'parent'")


# --- wrong types and values ------------------------------------------------------------------

@pytest.mark.parametrize("old,new,words", [
    ("port: 104}", "port: abc}", ("scp.port", "integer")),
    ("port: 104}", "port: 70000}", ("scp.port", "between")),
    ("    kinds: [ecg]", "    kinds: ecg", ("centre.kinds", "must be a list")),
    ("    kinds: [ecg]", "    kinds: [xray]", ("centre.kinds", "must be one of")),
    ("    kinds: [ecg]", "    kinds: []", ("at least one kind",)),
    ("    level: village", "    level: hamlet", ("organization.level", "must be one of")),
    ("role: clinic,", "role: nurse,", ("user.role",)),
    ("modality_aes: [VIL_ECG1]", "modality_aes: [VIL_ECG_TOO_LONG_AE]", ("malformed",)),
    ("  - id: town", "  - id: Town Centre", ("organization.id", "malformed")),
])
def test_wrong_type_or_value(old, new, words):
    text, line = edit(old, new)
    fails(text, line, *words)


def test_site_rules_must_be_a_list():
    text = BASE.replace("site_rules:\n  - {organization: village, kind: ecg, modalities: [ECG]}\n",
                        "site_rules: every ECG from the village\n")
    fails(text, line_of(text, "site_rules:"), "site_rules must be a list")


def test_boolean_on_duty():
    text, line = edit("role: clinic, organization: town}", "role: clinic, organization: town, on_duty: maybe}")
    fails(text, line, "on_duty", "true or false")


def test_reader_needs_a_centre():
    text, line = edit("organization: county, centre: county-imaging}", "organization: county}")
    fails(text, line, "needs a centre")


def test_webhook_url_and_secret_env():
    text, line = edit("    modality_aes: [VIL_ECG1]",
                      "    modality_aes: [VIL_ECG1]\n    webhook: {url: ftp://x, secret_env: VIL_SECRET}")
    fails(text, line + 1, "http(s) URL")
    text, line = edit("    modality_aes: [VIL_ECG1]",
                      "    modality_aes: [VIL_ECG1]\n    webhook: {url: 'https://x', secret_env: hunter2}")
    fails(text, line + 1, "secret_env", "malformed")


def test_invalid_yaml_names_the_line():
    text, line = edit("    level: village", "    level: [village")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        parse_consortium(text, source="test.yaml")
    assert info.value.line is not None and info.value.line >= line


def test_libyaml_and_the_pure_python_parser_read_the_same_consortium(monkeypatch):
    from services.core import consortium
    if consortium._C_LOADERS is None:
        pytest.skip("PyYAML without libyaml: only the pure-Python parser")
    text = EXAMPLE_CONSORTIUM.read_text("utf-8")
    fast = parse_consortium(text)
    monkeypatch.setattr(consortium, "_C_LOADERS", None)
    assert parse_consortium(text) == fast
    # a line of a bad value (from the nodes) is the same too
    bad, line = edit("    level: village", "    level: metropolis")
    with pytest.raises(ConfigError) as slow_error:
        parse_consortium(bad)
    monkeypatch.undo()
    with pytest.raises(ConfigError) as fast_error:
        parse_consortium(bad)
    assert str(fast_error.value) == str(slow_error.value) and fast_error.value.line == line


def test_empty_file():
    with pytest.raises(ConfigError, match="empty"):
        parse_consortium("", source="test.yaml")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_consortium(tmp_path / "missing.yaml")


# --- dangling references ---------------------------------------------------------------------

def test_dangling_parent():
    text, _ = edit("    parent: town", "    parent: nowhere")
    fails(text, line_of(text, "- id: village"), "unknown parent 'nowhere'")


def test_dangling_centre_organization():
    text, line = edit("    organization: city", "    organization: atlantis")
    fails(text, line, "unknown organization 'atlantis'")


def test_dangling_escalation():
    text, line = edit("    escalation: city-imaging", "    escalation: moon-imaging")
    fails(text, line, "escalates to unknown centre 'moon-imaging'")


@pytest.mark.parametrize("old,new,word", [
    ("    centre: county-ecg", "    centre: nowhere-ecg", "route.centre"),
    ("    overflow: [city-imaging]", "    overflow: [nowhere-imaging]", "route.overflow"),
    ("    origins: [town]", "    origins: [atlantis]", "route.origins"),
])
def test_dangling_route_reference(old, new, word):
    text, line = edit(old, new)
    fails(text, line, word, "unknown")


def test_route_to_a_centre_that_does_not_read_the_kind():
    text, line = edit("    centre: county-ecg", "    centre: county-imaging")
    fails(text, line, "does not read ecg")


@pytest.mark.parametrize("old,new,words", [
    ("role: admin, organization: county}", "role: admin, organization: atlantis}", ("unknown organization",)),
    ("organization: county, centre: county-imaging}", "organization: county, centre: nowhere}",
     ("user.centre", "unknown centre")),
    ("organization: county, centre: county-imaging}", "organization: city, centre: county-imaging}",
     ("not part of organization 'city'",)),
])
def test_dangling_user_reference(old, new, words):
    text, line = edit(old, new)
    fails(text, line, *words)


def test_dangling_site_rule():
    text, line = edit("{organization: village, kind: ecg", "{organization: atlantis, kind: ecg")
    fails(text, line, "site rule names unknown organization")


# --- duplicates and cycles -------------------------------------------------------------------

@pytest.mark.parametrize("old,new", [
    ("modality_aes: [VIL_ECG1]", "modality_aes: [TOWN_ECG1]"),  # another organisation's modality
    ("modality_aes: [VIL_ECG1]", "modality_aes: [VIL_ECG1, VIL_ECG1]"),  # twice in one list
    ("modality_aes: [VIL_ECG1]", "modality_aes: [COUNTY_PACS]"),  # an SCP's AE title
    ("workstation_aes: [CITY_RWS1]", "workstation_aes: [CITY_RWS1]\n    scp: {ae_title: CITY_RWS1, host: h, port: 1}"),
])
def test_duplicate_ae_title(old, new):
    text, _ = edit(old, new)
    ae = "CITY_RWS1" if "scp" in new else new.split("[")[1].split("]")[0].split(",")[-1].strip()
    line = line_of(text, f"ae_title: {ae}") if "scp" in new else line_of(text, new.strip())
    fails(text, line, "duplicate AE title", repr(ae))


@pytest.mark.parametrize("old,new,what", [
    ("  - id: village", "  - id: town", "organization"),
    ("  - id: city-imaging", "  - id: county-ecg", "centre"),
    ("{id: town-clinic,", "{id: admin,", "user"),
])
def test_duplicate_id(old, new, what):
    text, line = edit(old, new)
    fails(text, line, f"duplicate {what} id")


def test_parent_cycle():
    text, _ = edit("    workstation_aes: [CITY_RWS1]", "    workstation_aes: [CITY_RWS1]\n    parent: village")
    fails(text, line_of(text, "- id: city"), "parent cycle")


def test_self_parent_is_a_cycle():
    text, _ = edit("    parent: town", "    parent: village")
    fails(text, line_of(text, "- id: village"), "parent cycle")


# --- SLAs and durations ----------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), (45, 45),
                                          (" 15m ", 900)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30 min", "2H", "1w", "-5m", "m", ""])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["half an hour", "30min", "1w"])
def test_bad_sla_duration_names_the_line(bad):
    text, line = edit("imaging: {stat: 30m,", f"imaging: {{stat: {bad},")
    fails(text, line, "bad duration")


def test_sla_needs_every_priority():
    text, line = edit("ecg: {stat: 15m, urgent: 1h, routine: 1d}", "ecg: {stat: 15m, urgent: 1h}")
    fails(text, line, "lacks required key 'routine'")


def test_sla_seconds():
    c = parse_consortium(BASE)
    assert c.sla_seconds("imaging", "stat") == 1800
    assert c.sla_seconds("imaging", "routine") == 86400
    assert c.sla_seconds("ecg", "routine") == 86400
    assert c.sla == {"imaging": {"stat": 1800, "urgent": 7200, "routine": 86400},
                     "ecg": {"stat": 900, "urgent": 3600, "routine": 86400}}


# --- routing ---------------------------------------------------------------------------------

def test_routes_for_picks_the_most_specific_origin_first():
    c = parse_consortium(BASE)
    # The village is under the town: the town's DX route is nearer than the county's.
    assert [r.centre for r in c.routes_for("village", "imaging", "DX")] == ["city-imaging", "county-imaging"]
    # Not DX: only the county route covers it.
    assert [r.centre for r in c.routes_for("village", "imaging", "CT")] == ["county-imaging"]
    assert c.routes_for("village", "imaging", "CT")[0].overflow == ("city-imaging",)
    # The city is above the county: no imaging route covers it.
    assert c.routes_for("city", "imaging", "DX") == []
    # A route without origins covers everyone, after every route naming an origin.
    assert [r.centre for r in c.routes_for("city", "ecg", None)] == ["county-ecg"]


def test_routes_for_prefers_origin_depth_then_file_order():
    text = BASE.replace("  - kind: ecg\n    centre: county-ecg\n",
                        "  - kind: ecg\n    centre: county-ecg\n"
                        "  - kind: imaging\n    origins: [county]\n    centre: city-imaging\n")
    c = parse_consortium(text)
    assert [r.centre for r in c.routes_for("county", "imaging", "CT")] == ["county-imaging", "city-imaging"]


# --- the example -----------------------------------------------------------------------------

def test_the_example_loads():
    c = load_consortium(EXAMPLE_CONSORTIUM)
    levels = [o.level for o in c.organizations.values()]
    assert levels.count("city") >= 1 and levels.count("county") >= 1
    assert levels.count("township") >= 3 and levels.count("village") >= 2
    assert {k for centre in c.centres.values() for k in centre.kinds} == {"imaging", "ecg"}
    assert {u.role for u in c.users.values()} == {"clinic", "reader", "coordinator", "admin", "auditor", "edge"}
    # Every township and village clinic has modalities and its own receiving SCP.
    for org in c.organizations.values():
        if org.level in ("township", "village"):
            assert org.modality_aes and org.scp is not None, org.id
    # The routes of the example: a village ECG goes to the county ECG centre, escalating to the city.
    ecg = c.routes_for("zhangzhuang-vc", "ecg", "ECG")
    assert ecg[0].centre == "county-ecg" and ecg[0].overflow == ("city-ecg",)
    assert c.centres["county-ecg"].escalation == "city-ecg"
    assert c.routes_for("chengguan-thc", "imaging", "CT")[0].centre == "county-imaging"
    assert c.routes_for("city-hospital", "imaging", "CT")[0].centre == "city-imaging"
    assert c.sla_seconds("imaging", "stat") == 30 * 60 and c.sla_seconds("ecg", "stat") == 15 * 60
    assert c.organization_of_ae("ZZ_ECG1").id == "zhangzhuang-vc"


def test_the_example_digest_is_stable():
    assert load_consortium(EXAMPLE_CONSORTIUM).digest() == load_consortium(EXAMPLE_CONSORTIUM).digest()
    assert parse_consortium(BASE).digest() != parse_consortium(BASE.replace("测试医共体", "另一个")).digest()


# --- retention (issue 14) ------------------------------------------------------------------------

def test_retention_defaults_and_configured_classes():
    default = parse_consortium(BASE).retention
    assert default.years == {"outpatient": 15, "inpatient": 30} and default.default_class == "inpatient"
    c = parse_consortium(BASE + "retention:\n  years: {outpatient: 20, physical_exam: 5}\n"
                                "  default_class: outpatient\n")
    assert c.retention.years == {"outpatient": 20, "inpatient": 30, "physical_exam": 5}
    assert c.retention.default_class == "outpatient"


@pytest.mark.parametrize("extra,words", [
    ("retention:\n  years: {outpatient: 0}\n", ["retention.years.outpatient"]),
    ("retention:\n  years: [15, 30]\n", ["retention.years must map"]),
    ("retention:\n  default_class: emergency\n", ["'emergency'", "inpatient", "outpatient"]),
    ("retention:\n  keep: 15\n", ["unknown key", "'keep'"]),
])
def test_bad_retention_names_the_line(extra, words):
    text = BASE + extra
    fails(text, text.count("\n"), *words)  # each error is on the last line


def test_retention_runs_from_the_last_activity_of_any_record():
    from datetime import UTC, datetime

    from services.core.consortium import RetentionConfig
    from services.core.retention import retention_of
    now = datetime(2026, 12, 2, tzinfo=UTC)
    docs = [{"signed_at": "2020-02-29T08:00:00.000Z", "addendum_at": "not a time"},
            {"requested_at": "2019-01-01T00:00:00Z", "state_at": None}]
    r = retention_of(RetentionConfig(), "outpatient", docs, now=now)
    assert (r.last_activity, r.retained_until) == ("2020-02-29T08:00:00.000Z", "2035-03-01T08:00:00.000Z")
    assert not r.expired(now) and r.expired(datetime(2035, 3, 1, 8, tzinfo=UTC))
    unknown = retention_of(RetentionConfig(), None, [], now=now)
    assert (unknown.record_class, unknown.retained_until) == ("inpatient", "2056-12-02T00:00:00.000Z")


def test_readers_titles_licences_leads_and_a_centres_sign_off():
    text, _ = edit("organization: county, centre: county-imaging}",
                   "organization: county, centre: county-imaging, title: 住院医师, licence_number: '110410000034567',"
                   " lead: true}")
    text, _ = edit("    escalation: city-imaging", "    escalation: city-imaging\n    sign_off: {imaging: 主治医师}",
                   text=text)
    c = parse_consortium(text)
    wang, centre = c.users["dr-wang"], c.centres["county-imaging"]
    assert (wang.title, wang.licence_number, wang.lead) == ("住院医师", "110410000034567", True)
    assert centre.sign_off == {"imaging": "主治医师"}
    assert not centre.releases("imaging", "住院医师") and not centre.releases("imaging", None)
    assert centre.releases("imaging", "主治医师") and centre.releases("imaging", "主任医师")
    assert c.centres["county-ecg"].releases("ecg", None)  # no sign_off: everyone releases


@pytest.mark.parametrize("old,new,words", [
    ("organization: county, centre: county-imaging}", "organization: county, centre: county-imaging, title: 医师}",
     ("user.title", "must be one of")),
    ("organization: county, centre: county-imaging}",
     "organization: county, centre: county-imaging, licence_number: 'no/such'}", ("licence_number", "malformed")),
    ("role: admin, organization: county}", "role: admin, organization: county, lead: true}", ("lead", "no centre")),
    ("    kinds: [ecg]", "    kinds: [ecg]\n    sign_off: {imaging: 主治医师}", ("does not read",)),
    ("    kinds: [ecg]", "    kinds: [ecg]\n    sign_off: {ecg: 专家}", ("centre.sign_off.ecg", "must be one of")),
])
def test_wrong_title_licence_lead_or_sign_off(old, new, words):
    text, line = edit(old, new)
    line += 1 if "\n" in new else 0
    fails(text, line, *words)


def test_a_reader_of_several_centres_lists_them_home_centre_first():
    text, _ = edit("centre: county-imaging}", "centres: [county-imaging, city-imaging]}")
    wang = parse_consortium(text).users["dr-wang"]
    assert (wang.centre, wang.centres) == ("county-imaging", ("county-imaging", "city-imaging"))
    assert wang.reads_for("city-imaging") and not wang.reads_for("county-ecg")
    one = parse_consortium(BASE).users["dr-wang"]  # the one-centre form is the same as a list of one
    assert one.centres == ("county-imaging",) and one.reads_for("county-imaging")


@pytest.mark.parametrize("new, words", [
    ("centres: [county-imaging, nowhere]}", ("user.centres[]", "unknown centre 'nowhere'")),
    ("centres: [county-imaging, county-imaging]}", ("twice",)),
    ("centres: []}", ("at least one centre",)),
    ("centres: [city-imaging, county-imaging]}", ("'city-imaging' is not part of organization 'county'",)),
    ("centre: county-imaging, centres: [county-imaging]}", ("both centre and centres",)),
])
def test_a_readers_centres_must_exist_and_the_home_centre_be_his_organisations(new, words):
    text, line = edit("centre: county-imaging}", new)
    fails(text, line, *words)
