"""The consortium (医联体) as data: organisations, AE titles, reading centres, routes, SLAs, users.

Loaded from YAML (``deploy/consortium.example.yaml`` documents every key) and validated
before anything starts: unknown keys, wrong types, dangling references and duplicate AE
titles are :class:`ConfigError` naming the file and line.  The model is I/O free and
immutable; the admin API replaces it whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import identity
from .fees import SERVICES, Fee, FeeSchedule, fen, overlapping
from .localtime import DEFAULT_TIMEZONE, zone

LEVELS = ("city", "county", "township", "village")
KINDS = ("imaging", "ecg")
PRIORITIES = ("stat", "urgent", "routine")
ROLES = ("clinic", "reader", "coordinator", "admin", "auditor", "edge")  # edge: a township 前置机
GREEN_CHANNELS = ("胸痛", "卒中", "高危孕产妇", "危重新生儿")
# Physicians' professional titles (职称), lowest first: a centre's ``sign_off`` names the lowest that releases.
TITLES = ("住院医师", "主治医师", "副主任医师", "主任医师")
LICENCE = re.compile(r"^[0-9A-Za-z]{6,30}$")  # 医师执业证书编号 (15 digits today; older ones differ)
AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
REPORT_PAGES = ("A4", "A5")  # the report PDF's paper sizes
GRADE_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")  # an image quality grade (A, B, C, reject, or the consortium's)
RECOGNITION_MARK = re.compile(r"^\S.{0,7}\Z")  # 互认标识: a short mark such as HR (at most 8 characters)


class ConfigError(ValueError):
    def __init__(self, message: str, *, source: str = "", line: int | None = None) -> None:
        where = f"{source}:{line}: " if line is not None else (f"{source}: " if source else "")
        super().__init__(f"{where}{message}")
        self.line = line


def parse_duration(text: str | int) -> int:
    """``30m`` -> 1800 seconds."""
    if isinstance(text, int):
        return text
    m = DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"bad duration {text!r} (use e.g. 90s, 30m, 2h, 1d)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A DICOM application entity that Yilian calls: the clinic's own receiving SCP."""

    ae_title: str
    host: str
    port: int
    tls: bool = False
    # On the clinic's LAN, out of the centre's reach: the clinic's edge (前置机) fetches the result
    # and stores it there (docs/edge.md); the centre never dials it.
    via_edge: bool = False


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    secret_env: str  # name of the environment variable that holds the HMAC secret


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    level: str
    parent: str | None = None
    modality_aes: tuple[str, ...] = ()  # calling AE titles of its modalities (C-STORE senders)
    workstation_aes: tuple[str, ...] = ()  # AE titles of its reading workstations (C-FIND/C-GET/C-MOVE)
    scp: Endpoint | None = None  # where results are C-STOREd back to
    webhook: Webhook | None = None
    contact: str | None = None  # who is told when a critical result goes unacknowledged


@dataclass(frozen=True, slots=True)
class Centre:
    """A reading centre (影像诊断中心 / 心电诊断中心) inside an organisation."""

    id: str
    name: str
    organization: str
    kinds: tuple[str, ...]
    escalation: str | None = None  # the upper centre for second opinions
    capacity_per_reader_per_hour: int = 6
    # kind -> the lowest title (TITLES) whose report is released at once; a lower one's is submitted for review
    sign_off: dict[str, str] = field(default_factory=dict)
    report_page: str | None = None  # the report PDF's paper size (REPORT_PAGES); None: the consortium's
    # duty roster rule (排班管理): shift kind (day, night, on_call) -> the fewest readers on it while it runs
    min_on_duty: dict[str, int] = field(default_factory=dict)

    def releases(self, kind: str, title: str | None) -> bool:
        """Whether a reader of ``title`` releases a ``kind`` report himself (no review)."""
        needed = self.sign_off.get(kind)
        if needed is None:
            return True
        return title in TITLES and TITLES.index(title) >= TITLES.index(needed)


@dataclass(frozen=True, slots=True)
class Route:
    """Which centre reads a kind (and modalities) for which origins; overflow in order."""

    kind: str
    centre: str
    origins: tuple[str, ...] = ()  # organisation ids; their whole subtree is covered
    modalities: tuple[str, ...] = ()  # empty: any
    overflow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SiteRule:
    """Create a reading request automatically when a matching study is received."""

    organization: str
    kind: str
    modalities: tuple[str, ...] = ()
    priority: str = "routine"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    role: str
    organization: str
    centre: str | None = None  # the first of ``centres``: his home centre (kept for one-centre callers)
    on_duty: bool = True
    specialty: str | None = None  # e.g. 心内科; used to route and staff consultations (远程会诊)
    title: str | None = None  # 职称, one of TITLES (readers)
    licence_number: str | None = None  # 执业证书编号, printed with the signer's name
    lead: bool = False  # centre lead (科主任): manages his centre's report templates
    disabled: bool = False  # set by an admin (users collection, docs/desks.md): no token, no session
    department: str | None = None  # a hospital department's user (e.g. 心内科): receives referrals (docs/referral.md)
    # Every centre he reads (or coordinates) for, ``centre`` first; a reader in 多点执业 reads for several.
    centres: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # ``centre`` is the one-centre form: a centre not among ``centres`` replaces them.
        if self.centre is None and self.centres:
            object.__setattr__(self, "centre", self.centres[0])
        elif self.centre is not None and self.centre not in self.centres:
            object.__setattr__(self, "centres", (self.centre,))

    def reads_for(self, centre: str | None) -> bool:
        return centre is not None and centre in self.centres


@dataclass(frozen=True, slots=True)
class ConsultationConfig:
    """Remote consultation (远程会诊) settings; Yilian only issues and records the meeting link."""

    meeting_url_template: str | None = None  # ``{consultation_id}`` is replaced


@dataclass(frozen=True, slots=True)
class ReferralConfig:
    """Two-way referral (双向转诊): how long a department has to answer, when reserved slots return."""

    answer_within: int = 7200  # seconds; an unanswered up-referral then escalates to the coordinator
    release_before: int = 86400  # seconds before a reserved slot starts that it returns to the general pool


@dataclass(frozen=True, slots=True)
class RecognisedItem:
    """One exam item of the consortium's 结果互认 catalogue: a modality (and optionally a body part)."""

    id: str
    name: str
    modality: str
    body_part: str | None = None  # empty: any body part of the modality
    validity_days: int = 30
    mark: str = "HR"


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long records are kept, per record class, from their last activity (电子病历应用管理规范第19条)."""

    years: dict[str, int] = field(default_factory=lambda: {"outpatient": 15, "inpatient": 30})
    default_class: str = "inpatient"  # a record whose class is not known is kept as long as this class


@dataclass(frozen=True, slots=True)
class QualityGrade:
    """One grade of the consortium's image quality scale (影像质控); ``reject`` marks 废片."""

    code: str
    label: str
    reject: bool = False


DEFAULT_SCALE = (QualityGrade("A", "甲片"), QualityGrade("B", "乙片"), QualityGrade("C", "丙片"),
                 QualityGrade("reject", "废片", reject=True))


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """Image quality grading and peer review (docs/quality.md)."""

    scale: tuple[QualityGrade, ...] = DEFAULT_SCALE
    peer_review_percent: int = 0  # % of released reports sampled at random for peer review (critical: all)

    def grade(self, code: str) -> QualityGrade | None:
        return next((g for g in self.scale if g.code == code), None)


@dataclass(frozen=True, slots=True)
class Consortium:
    id: str
    name: str
    organizations: dict[str, Organization]
    centres: dict[str, Centre]
    routes: tuple[Route, ...]
    sla: dict[str, dict[str, int]]  # kind -> priority -> seconds
    priority_boost: tuple[str, ...]  # what moves a request ahead within its priority
    site_rules: tuple[SiteRule, ...]
    users: dict[str, User]
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    consultation: ConsultationConfig = field(default_factory=ConsultationConfig)
    timezone: str = DEFAULT_TIMEZONE  # IANA zone of times shown to people and written in DICOM
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    recognition_mark: str | None = None  # 互认标识 (e.g. "HR") printed on every report PDF; None: no mark
    report_page: str = "A4"  # the report PDF's paper size; a centre may set its own
    settlement: FeeSchedule = field(default_factory=FeeSchedule)  # 资金结算: fees and their split (services/core/fees.py)
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Issuers of Patient ID whose identifiers make the consortium patient identity (docs/identity.md)
    identity_issuers: identity.Issuers = identity.ISSUERS
    referral: ReferralConfig = field(default_factory=ReferralConfig)
    recognition: tuple[RecognisedItem, ...] = ()  # 结果互认 catalogue (docs/referral.md)

    # --- lookups the services need ---------------------------------------------------
    def organization_of_ae(self, ae_title: str) -> Organization | None:
        ae = ae_title.strip()
        for org in self.organizations.values():
            if ae in org.modality_aes or ae in org.workstation_aes:
                return org
        return None

    def endpoint(self, ae_title: str) -> Endpoint | None:
        """A registered SCP by AE title (C-MOVE destinations, result delivery)."""
        for org in self.organizations.values():
            if org.scp is not None and org.scp.ae_title == ae_title.strip():
                return org.scp
        return None

    def ancestors(self, org_id: str) -> list[str]:
        """``org_id`` and its parents up to the root."""
        chain = []
        current: str | None = org_id
        while current is not None:
            chain.append(current)
            current = self.organizations[current].parent
        return chain

    def routes_for(self, origin: str, kind: str, modality: str | None) -> list[Route]:
        """Routes that cover ``origin`` for ``kind``/``modality``, the most specific origin first."""
        chain = self.ancestors(origin)
        found: list[tuple[int, int, Route]] = []
        for order, route in enumerate(self.routes):
            if route.kind != kind:
                continue
            if route.modalities and (modality or "") not in route.modalities:
                continue
            if route.origins:
                depth = min((chain.index(o) for o in route.origins if o in chain), default=None)
                if depth is None:
                    continue
            else:
                depth = len(chain)
            found.append((depth, order, route))
        return [r for _, _, r in sorted(found, key=lambda t: (t[0], t[1]))]

    def sla_seconds(self, kind: str, priority: str) -> int:
        return self.sla[kind][priority]

    def centres_of(self, org_id: str) -> list[Centre]:
        return [c for c in self.centres.values() if c.organization == org_id]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.source, sort_keys=True, ensure_ascii=False)
                              .encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return self.source


# --- loading ------------------------------------------------------------------------------

class _Node:
    """A YAML value with the line it came from (for error messages)."""

    def __init__(self, node: yaml.Node, source: str) -> None:
        self.node, self.source = node, source

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, line=self.line)


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source

    def wrap(self, node: yaml.Node) -> _Node:
        return _Node(node, self.source)

    def mapping(self, node: _Node, what: str, keys: dict[str, bool]) -> dict[str, _Node]:
        """Check ``node`` is a mapping with only ``keys`` (name -> required)."""
        if not isinstance(node.node, yaml.MappingNode):
            raise node.error(f"{what} must be a mapping")
        out: dict[str, _Node] = {}
        for key_node, value_node in node.node.value:
            key = key_node.value
            if key not in keys:
                raise self.wrap(key_node).error(
                    f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(keys))})")
            if key in out:
                raise self.wrap(key_node).error(f"duplicate key {key!r} in {what}")
            out[key] = self.wrap(value_node)
        for key, required in keys.items():
            if required and key not in out:
                raise node.error(f"{what} lacks required key {key!r}")
        return out

    def seq(self, node: _Node | None, what: str) -> list[_Node]:
        if node is None:
            return []
        if not isinstance(node.node, yaml.SequenceNode):
            raise node.error(f"{what} must be a list")
        return [self.wrap(n) for n in node.node.value]

    def scalar(self, node: _Node, what: str, *, pattern: re.Pattern[str] | None = None,
               choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(node.node, yaml.ScalarNode) or node.node.value == "":
            raise node.error(f"{what} must be a non-empty scalar")
        value = str(node.node.value)
        if pattern is not None and not pattern.match(value):
            raise node.error(f"{what} {value!r} is malformed")
        if choices is not None and value not in choices:
            raise node.error(f"{what} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def opt(self, fields: dict[str, _Node], key: str, what: str, **kw: Any) -> str | None:
        return self.scalar(fields[key], f"{what}.{key}", **kw) if key in fields else None

    def integer(self, node: _Node, what: str, lo: int, hi: int) -> int:
        try:
            value = int(self.scalar(node, what))
        except ValueError:
            raise node.error(f"{what} must be an integer") from None
        if not lo <= value <= hi:
            raise node.error(f"{what} must be between {lo} and {hi}")
        return value

    def boolean(self, node: _Node, what: str) -> bool:
        value = self.scalar(node, what).lower()
        if value not in ("true", "false", "yes", "no"):
            raise node.error(f"{what} must be true or false")
        return value in ("true", "yes")

    def strings(self, node: _Node | None, what: str, **kw: Any) -> tuple[str, ...]:
        return tuple(self.scalar(n, f"{what}[]", **kw) for n in self.seq(node, what))


def load_consortium(path: str | Path) -> Consortium:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read consortium file: {exc}", source=str(path)) from None
    return parse_consortium(text, source=str(path))


class _TextDates(yaml.SafeLoader):
    """YAML without implicit timestamps: a date (settlement's valid_from) stays the text it was, so
    the document is stored and digested as JSON, and a malformed one is an error naming its line."""


_TextDates.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

# libyaml's parser where PyYAML has it: the same nodes (lines included) and data, ~6x faster (every
# runtime and process loads the file); the pure-Python one for a file it refuses, so the message and
# line of a YAML error stay the same.
_C_LOADERS: tuple[type, type] | None = None
if getattr(yaml, "__with_libyaml__", False):
    class _CTextDates(yaml.CSafeLoader):
        yaml_implicit_resolvers = _TextDates.yaml_implicit_resolvers
    _C_LOADERS = (yaml.CSafeLoader, _CTextDates)


def _parse_yaml(text: str) -> tuple[Any, Any]:
    if _C_LOADERS is not None:
        with contextlib.suppress(yaml.YAMLError):
            return yaml.compose(text, Loader=_C_LOADERS[0]), yaml.load(text, Loader=_C_LOADERS[1])  # noqa: S506
    return yaml.compose(text), yaml.load(text, Loader=_TextDates)  # noqa: S506 - a SafeLoader


def parse_consortium(text: str, *, source: str = "<consortium>") -> Consortium:
    try:
        root, data = _parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source,
                          line=mark.line + 1 if mark else None) from None
    if root is None:
        raise ConfigError("empty consortium file", source=source)
    L = _Loader(source)
    top = L.mapping(L.wrap(root), "consortium file", {
        "consortium": True, "organizations": True, "centres": True, "routes": True,
        "sla": True, "priority_boost": False, "site_rules": False, "users": True,
        "consultation": False, "retention": False, "quality": False, "identity": False, "settlement": False,
        "referral": False, "recognition": False})

    head = L.mapping(top["consortium"], "consortium", {"id": True, "name": True, "timezone": False,
                                                       "recognition_mark": False, "report_page": False})
    recognition_mark = L.opt(head, "recognition_mark", "consortium", pattern=RECOGNITION_MARK)
    report_page = L.opt(head, "report_page", "consortium", choices=REPORT_PAGES) or "A4"
    timezone = L.opt(head, "timezone", "consortium") or DEFAULT_TIMEZONE
    try:
        zone(timezone)
    except ValueError as exc:
        raise head["timezone"].error(f"consortium.timezone: {exc}") from None
    orgs: dict[str, Organization] = {}
    org_lines: dict[str, _Node] = {}
    ae_seen: dict[str, str] = {}

    def claim_ae(node: _Node, ae: str, owner: str) -> None:
        if ae in ae_seen:
            raise node.error(f"duplicate AE title {ae!r} (already used by {ae_seen[ae]})")
        ae_seen[ae] = owner

    for n in L.seq(top["organizations"], "organizations"):
        f = L.mapping(n, "organization", {
            "id": True, "name": True, "level": True, "parent": False, "modality_aes": False,
            "workstation_aes": False, "scp": False, "webhook": False, "contact": False})
        oid = L.scalar(f["id"], "organization.id", pattern=ID)
        if oid in orgs:
            raise f["id"].error(f"duplicate organization id {oid!r}")
        ae_fields = {}
        for key in ("modality_aes", "workstation_aes"):
            aes = L.strings(f.get(key), f"organization.{key}", pattern=AE_TITLE)
            for ae_node, ae in zip(L.seq(f.get(key), key), aes):
                claim_ae(ae_node, ae, oid)
            ae_fields[key] = aes
        scp = None
        if "scp" in f:
            s = L.mapping(f["scp"], "organization.scp", {"ae_title": True, "host": True, "port": True,
                                                                "tls": False, "via_edge": False})
            ae = L.scalar(s["ae_title"], "scp.ae_title", pattern=AE_TITLE)
            claim_ae(s["ae_title"], ae, oid)
            scp = Endpoint(ae, L.scalar(s["host"], "scp.host"), L.integer(s["port"], "scp.port", 1, 65535),
                           L.boolean(s["tls"], "scp.tls") if "tls" in s else False,
                           L.boolean(s["via_edge"], "scp.via_edge") if "via_edge" in s else False)
        webhook = None
        if "webhook" in f:
            w = L.mapping(f["webhook"], "organization.webhook", {"url": True, "secret_env": True})
            url = L.scalar(w["url"], "webhook.url")
            if not url.startswith(("https://", "http://")):
                raise w["url"].error("webhook.url must be an http(s) URL")
            webhook = Webhook(url, L.scalar(w["secret_env"], "webhook.secret_env",
                                            pattern=re.compile(r"^[A-Z][A-Z0-9_]*$")))
        orgs[oid] = Organization(
            id=oid, name=L.scalar(f["name"], "organization.name"),
            level=L.scalar(f["level"], "organization.level", choices=LEVELS),
            parent=L.opt(f, "parent", "organization"), scp=scp, webhook=webhook,
            contact=L.opt(f, "contact", "organization"), **ae_fields)
        org_lines[oid] = n
    for oid, org in orgs.items():
        if org.parent is not None and org.parent not in orgs:
            raise org_lines[oid].error(f"organization {oid!r} names unknown parent {org.parent!r}")
    for oid in orgs:  # no cycles
        seen, current = set(), oid
        while current is not None:
            if current in seen:
                raise org_lines[oid].error(f"organization {oid!r} is in a parent cycle")
            seen.add(current)
            current = orgs[current].parent

    centres: dict[str, Centre] = {}
    centre_lines: dict[str, _Node] = {}
    for n in L.seq(top["centres"], "centres"):
        f = L.mapping(n, "centre", {"id": True, "name": True, "organization": True, "kinds": True,
                                    "escalation": False, "capacity_per_reader_per_hour": False,
                                    "sign_off": False, "report_page": False, "min_on_duty": False})
        cid = L.scalar(f["id"], "centre.id", pattern=ID)
        if cid in centres:
            raise f["id"].error(f"duplicate centre id {cid!r}")
        org = L.scalar(f["organization"], "centre.organization")
        if org not in orgs:
            raise f["organization"].error(f"centre {cid!r} names unknown organization {org!r}")
        kinds = L.strings(f["kinds"], "centre.kinds", choices=KINDS)
        if not kinds:
            raise f["kinds"].error("centre.kinds must list at least one kind")
        centres[cid] = Centre(cid, L.scalar(f["name"], "centre.name"), org, kinds,
                              L.opt(f, "escalation", "centre"),
                              L.integer(f["capacity_per_reader_per_hour"], "centre.capacity_per_reader_per_hour", 1, 1000)
                              if "capacity_per_reader_per_hour" in f else 6, _sign_off(L, f.get("sign_off"), kinds),
                              L.opt(f, "report_page", "centre", choices=REPORT_PAGES), _min_on_duty(L, f.get("min_on_duty")))
        centre_lines[cid] = f.get("escalation", n)
    for cid, c in centres.items():
        if c.escalation is not None and c.escalation not in centres:
            raise centre_lines[cid].error(f"centre {cid!r} escalates to unknown centre {c.escalation!r}")

    def centre_ref(node: _Node, what: str) -> str:
        cid = L.scalar(node, what)
        if cid not in centres:
            raise node.error(f"{what} names unknown centre {cid!r}")
        return cid

    def org_refs(node: _Node | None, what: str) -> tuple[str, ...]:
        refs = []
        for item in L.seq(node, what):
            oid = L.scalar(item, f"{what}[]")
            if oid not in orgs:
                raise item.error(f"{what} names unknown organization {oid!r}")
            refs.append(oid)
        return tuple(refs)

    routes = []
    for n in L.seq(top["routes"], "routes"):
        f = L.mapping(n, "route", {"kind": True, "centre": True, "origins": False, "modalities": False,
                                   "overflow": False})
        kind = L.scalar(f["kind"], "route.kind", choices=KINDS)
        centre = centre_ref(f["centre"], "route.centre")
        if kind not in centres[centre].kinds:
            raise f["centre"].error(f"centre {centre!r} does not read {kind}")
        overflow = tuple(centre_ref(o, "route.overflow[]") for o in L.seq(f.get("overflow"), "route.overflow"))
        routes.append(Route(kind, centre, org_refs(f.get("origins"), "route.origins"),
                            L.strings(f.get("modalities"), "route.modalities"), overflow))

    sla: dict[str, dict[str, int]] = {}
    sla_fields = L.mapping(top["sla"], "sla", {k: True for k in KINDS})
    for kind, node in sla_fields.items():
        per = L.mapping(node, f"sla.{kind}", {p: True for p in PRIORITIES})
        sla[kind] = {}
        for prio, pn in per.items():
            try:
                sla[kind][prio] = parse_duration(L.scalar(pn, f"sla.{kind}.{prio}"))
            except ValueError as exc:
                raise pn.error(str(exc)) from None

    boost = L.strings(top.get("priority_boost"), "priority_boost",
                      choices=("green_channel", "signed_resident")) or ("green_channel", "signed_resident")

    rules = []
    for n in L.seq(top.get("site_rules"), "site_rules"):
        f = L.mapping(n, "site rule", {"organization": True, "kind": True, "modalities": False, "priority": False})
        org = L.scalar(f["organization"], "site_rule.organization")
        if org not in orgs:
            raise f["organization"].error(f"site rule names unknown organization {org!r}")
        rules.append(SiteRule(org, L.scalar(f["kind"], "site_rule.kind", choices=KINDS),
                              L.strings(f.get("modalities"), "site_rule.modalities"),
                              L.opt(f, "priority", "site_rule", choices=PRIORITIES) or "routine"))

    users: dict[str, User] = {}
    for n in L.seq(top["users"], "users"):
        f = L.mapping(n, "user", {"id": True, "name": True, "role": True, "organization": True,
                                  "centre": False, "centres": False, "on_duty": False, "specialty": False, "title": False,
                                  "licence_number": False, "lead": False, "department": False})
        uid = L.scalar(f["id"], "user.id", pattern=ID)
        if uid in users:
            raise f["id"].error(f"duplicate user id {uid!r}")
        role = L.scalar(f["role"], "user.role", choices=ROLES)
        org = L.scalar(f["organization"], "user.organization")
        if org not in orgs:
            raise f["organization"].error(f"user {uid!r} names unknown organization {org!r}")
        own = _user_centres(L, f, centre_ref, uid)
        centre = own[0] if own else None
        if role in ("reader", "coordinator") and centre is None:
            raise n.error(f"user {uid!r} with role {role} needs a centre")
        if centre is not None and centres[centre].organization != org:
            # The home centre is his organisation's; further ones may be elsewhere (多点执业).
            raise f.get("centre", f.get("centres")).error(f"centre {centre!r} is not part of organization {org!r}")
        users[uid] = User(uid, L.scalar(f["name"], "user.name"), role, org, centre,
                          L.boolean(f["on_duty"], "user.on_duty") if "on_duty" in f else True,
                          L.opt(f, "specialty", "user"), L.opt(f, "title", "user", choices=TITLES),
                          L.opt(f, "licence_number", "user", pattern=LICENCE),
                          L.boolean(f["lead"], "user.lead") if "lead" in f else False, centres=own,
                          department=L.opt(f, "department", "user"))
        if users[uid].lead and centre is None:
            raise f["lead"].error(f"user {uid!r} is a centre lead (lead: true) but has no centre")

    consultation = ConsultationConfig()
    if "consultation" in top:
        f = L.mapping(top["consultation"], "consultation", {"meeting_url_template": False})
        template = L.opt(f, "meeting_url_template", "consultation")
        if template is not None and (not template.startswith(("https://", "http://"))
                                     or "{consultation_id}" not in template):
            raise f["meeting_url_template"].error(
                "consultation.meeting_url_template must be an http(s) URL containing {consultation_id}")
        consultation = ConsultationConfig(template)

    retention = RetentionConfig()
    if "retention" in top:
        f = L.mapping(top["retention"], "retention", {"years": False, "default_class": False})
        years = dict(retention.years)
        if "years" in f:
            if not isinstance(f["years"].node, yaml.MappingNode):
                raise f["years"].error("retention.years must map record classes to years (outpatient: 15)")
            for key, value in f["years"].node.value:
                name = L.scalar(L.wrap(key), "retention.years class", pattern=ID)
                years[name] = L.integer(L.wrap(value), f"retention.years.{name}", 1, 200)
        default_class = L.opt(f, "default_class", "retention") or retention.default_class
        if default_class not in years:
            raise f["default_class"].error(
                f"retention.default_class {default_class!r} is not one of the classes {sorted(years)}")
        retention = RetentionConfig(years, default_class)

    settlement = _settlement(L, top["settlement"]) if "settlement" in top else FeeSchedule()
    quality = _quality(L, top.get("quality"))
    issuers = _identity_issuers(L, top["identity"]) if "identity" in top else identity.ISSUERS
    referral = ReferralConfig()
    if "referral" in top:
        f = L.mapping(top["referral"], "referral", {"answer_within": False, "release_before": False})
        values = {}
        for key in ("answer_within", "release_before"):
            if key in f:
                try:
                    values[key] = parse_duration(L.scalar(f[key], f"referral.{key}"))
                except ValueError as exc:
                    raise f[key].error(f"referral.{key}: {exc}") from None
        referral = ReferralConfig(**values)

    recognition = []
    if "recognition" in top:
        f = L.mapping(top["recognition"], "recognition", {"items": True})
        for n in L.seq(f["items"], "recognition.items"):
            g = L.mapping(n, "recognition item", {"id": True, "name": True, "modality": True, "body_part": False,
                                                  "validity": True, "mark": False})
            iid = L.scalar(g["id"], "recognition.item.id", pattern=ID)
            if any(i.id == iid for i in recognition):
                raise g["id"].error(f"duplicate recognition item {iid!r}")
            try:
                days = parse_duration(L.scalar(g["validity"], "recognition.item.validity")) // 86400
            except ValueError as exc:
                raise g["validity"].error(f"recognition.item.validity: {exc}") from None
            if days < 1:
                raise g["validity"].error("recognition.item.validity must be at least a day (e.g. 30d)")
            recognition.append(RecognisedItem(
                iid, L.scalar(g["name"], "recognition.item.name"),
                L.scalar(g["modality"], "recognition.item.modality", pattern=re.compile(r"^[A-Z]{2,3}$")),
                L.opt(g, "body_part", "recognition.item"), days,
                L.opt(g, "mark", "recognition.item", pattern=RECOGNITION_MARK) or recognition_mark or "HR"))

    head_id = L.scalar(head["id"], "consortium.id", pattern=ID)
    return Consortium(head_id, L.scalar(head["name"], "consortium.name"), orgs, centres, tuple(routes),
                      sla, boost, tuple(rules), users, source=data, consultation=consultation,
                      timezone=timezone, retention=retention, recognition_mark=recognition_mark,
                      report_page=report_page, quality=quality, identity_issuers=issuers,
                      settlement=settlement, referral=referral, recognition=tuple(recognition))


def _quality(L: _Loader, node: _Node | None) -> QualityConfig:
    """``quality: {scale: [{code, label, reject}], peer_review_percent}``; the scale needs one reject grade."""
    if node is None:
        return QualityConfig()
    f = L.mapping(node, "quality", {"scale": False, "peer_review_percent": False})
    scale = DEFAULT_SCALE
    if "scale" in f:
        grades = []
        for item in L.seq(f["scale"], "quality.scale"):
            g = L.mapping(item, "quality.scale item", {"code": True, "label": True, "reject": False})
            code = L.scalar(g["code"], "quality.scale code", pattern=GRADE_CODE)
            if any(x.code == code for x in grades):
                raise g["code"].error(f"quality.scale: grade {code!r} twice")
            reject = L.boolean(g["reject"], "quality.scale reject") if "reject" in g else False
            grades.append(QualityGrade(code, L.scalar(g["label"], "quality.scale label"), reject))
        if sum(g.reject for g in grades) != 1:
            raise f["scale"].error("quality.scale needs exactly one grade with reject: true (废片)")
        scale = tuple(grades)
    percent = L.integer(f["peer_review_percent"], "quality.peer_review_percent", 0, 100) \
        if "peer_review_percent" in f else QualityConfig().peer_review_percent
    return QualityConfig(scale, percent)


def _min_on_duty(L: _Loader, node: _Node | None) -> dict[str, int]:
    """``centre.min_on_duty``: shift kind -> the fewest readers on a shift of that kind while one runs."""
    if node is None:
        return {}
    f = L.mapping(node, "centre.min_on_duty", {"day": False, "night": False, "on_call": False})
    return {kind: L.integer(n, f"centre.min_on_duty.{kind}", 0, 100) for kind, n in f.items()}


ISSUER_NAME = re.compile(r"^[A-Z0-9_]{1,64}$")  # Issuer of Patient ID (LO), as the worklist writes it


def _identity_issuers(L: _Loader, node: _Node) -> identity.Issuers:
    """``identity.issuers``: the national identifiers that make the consortium patient identity,
    each with its check (``resident_id``, ``health_card`` or ``regex`` with ``pattern``)."""
    f = L.mapping(node, "identity", {"issuers": True})
    issuers: list[identity.Issuer] = []
    for n in L.seq(f["issuers"], "identity.issuers"):
        g = L.mapping(n, "identity.issuers[]", {"name": True, "check": True, "pattern": False})
        name = L.scalar(g["name"], "identity.issuers[].name", pattern=ISSUER_NAME)
        if any(i.name == name for i in issuers):
            raise g["name"].error(f"identity.issuers: {name!r} is listed twice")
        check = L.scalar(g["check"], f"identity.issuers[{name}].check", choices=identity.CHECKS)
        pattern = L.opt(g, "pattern", f"identity.issuers[{name}]")
        if (check == "regex") != (pattern is not None):
            raise n.error(f"identity.issuers[{name}]: a pattern is given with check: regex, and only then")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise g["pattern"].error(f"identity.issuers[{name}].pattern is not a regular expression: {exc}") \
                    from None
        issuers.append(identity.Issuer(name, check, pattern))
    if not issuers:
        raise f["issuers"].error("identity.issuers must name at least one issuer (leave identity out for the "
                                 "defaults: CN_RESIDENT_ID, CN_HEALTH_CARD)")
    return tuple(issuers)


def _user_centres(L: _Loader, f: dict[str, _Node], centre_ref: Any, uid: str) -> tuple[str, ...]:
    """``user.centre`` (one) or ``user.centres`` (several, the home centre first), each a known centre."""
    if "centre" in f and "centres" in f:
        raise f["centres"].error(f"user {uid!r} has both centre and centres; list them all in centres")
    if "centre" in f:
        return (centre_ref(f["centre"], "user.centre"),)
    out: list[str] = []
    for item in L.seq(f.get("centres"), "user.centres"):
        cid = centre_ref(item, "user.centres[]")
        if cid in out:
            raise item.error(f"user {uid!r} lists centre {cid!r} twice")
        out.append(cid)
    if "centres" in f and not out:
        raise f["centres"].error(f"user {uid!r}: centres must list at least one centre")
    return tuple(out)


def _sign_off(L: _Loader, node: _Node | None, kinds: tuple[str, ...]) -> dict[str, str]:
    """``centre.sign_off``: kind -> the lowest title that releases its own reports."""
    if node is None:
        return {}
    f = L.mapping(node, "centre.sign_off", {k: False for k in KINDS})
    out = {}
    for kind, n in f.items():
        if kind not in kinds:
            raise n.error(f"centre.sign_off names {kind!r}, a kind the centre does not read")
        out[kind] = L.scalar(n, f"centre.sign_off.{kind}", choices=TITLES)
    return out


def _settlement(L: _Loader, node: _Node) -> FeeSchedule:
    """``settlement``: the fee schedule (currency, fees with their split and validity dates)."""
    from datetime import date
    from decimal import Decimal, InvalidOperation
    f = L.mapping(node, "settlement", {"currency": False, "fees": True})
    fees = []
    for item in L.seq(f["fees"], "settlement.fees"):
        g = L.mapping(item, "settlement.fees[]", {"service": True, "modalities": False, "fee": True,
                                                  "reading_share": True, "valid_from": True, "valid_to": False})
        service = L.scalar(g["service"], "settlement.fees[].service", choices=SERVICES)
        modalities = L.strings(g.get("modalities"), "settlement.fees[].modalities")
        if modalities and service != "imaging":
            raise g["modalities"].error("settlement.fees[].modalities: only imaging fees name modalities")
        try:
            amount = fen(L.scalar(g["fee"], "settlement.fees[].fee"))
        except ValueError as exc:
            raise g["fee"].error(f"settlement.fees[].fee: {exc}") from None
        try:
            share = Decimal(L.scalar(g["reading_share"], "settlement.fees[].reading_share"))
        except InvalidOperation:
            share = Decimal(-1)
        if not Decimal(0) <= share <= Decimal(1):
            raise g["reading_share"].error("settlement.fees[].reading_share must be a fraction from 0 to 1")
        days = []
        for key in ("valid_from", "valid_to"):
            text = L.opt(g, key, "settlement.fees[]")
            try:
                days.append(date.fromisoformat(text) if text else None)
            except ValueError:
                raise g[key].error(f"settlement.fees[].{key} must be a date (YYYY-MM-DD), not {text!r}") from None
        if days[1] is not None and days[1] < days[0]:
            raise g["valid_to"].error("settlement.fees[].valid_to is before valid_from")
        fees.append(Fee(service, amount, share, days[0], days[1], modalities))
        clash = overlapping(tuple(fees))
        if clash:
            raise item.error(f"settlement fee {clash[1].id} overlaps {clash[0].id}: one fee per service, "
                             "modality and day")
    return FeeSchedule(L.opt(f, "currency", "settlement") or "CNY", tuple(fees))


def consortium_summary(c: Consortium) -> dict[str, Any]:
    """Counts for logs and ``config.loaded``."""
    return {"consortium_id": c.id, "digest": c.digest(), "organizations": len(c.organizations)}


def as_plain(obj: Any) -> Any:
    return asdict(obj)
