"""Report templates in the store: one immutable document per version (id ``{template}@{version}``).

A new version is an insert with a fresh id, so two editors racing for the same version number
cannot overwrite each other (the loser gets :class:`~.errors.Conflict`).  The consortium's shipped
templates (``deploy/report-templates/*.yaml``) are loaded at start: a file whose content differs
from the newest stored version becomes a new version; an unchanged one is left alone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from ..core.store.port import DuplicateKey, Store, Transaction
from . import templates
from .errors import Conflict, Invalid

log = logging.getLogger("yilian.workflow")

COLLECTION = "report_templates"
SYSTEM = "system:templates"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "report-templates"

Doc = dict[str, Any]


def shipped_dir() -> Path:
    """Where the consortium's templates are read from (``YILIAN_REPORT_TEMPLATES``)."""
    return Path(os.environ.get("YILIAN_REPORT_TEMPLATES") or DEFAULT_DIR)


async def versions(db: Store | Transaction, template_id: str) -> list[Doc]:
    return await db.find(COLLECTION, {"template_id": template_id}, sort=(("version", 1),))


async def latest(db: Store | Transaction, template_id: str) -> Doc | None:
    found = await db.find(COLLECTION, {"template_id": template_id}, sort=(("version", -1),), limit=1)
    return found[0] if found else None


async def version(db: Store | Transaction, template_id: str, number: int | None) -> Doc | None:
    """A stored version, the newest when ``number`` is None."""
    if number is None:
        return await latest(db, template_id)
    return await db.get(COLLECTION, f"{template_id}@{number}")


async def current(store: Store, *, kind: str | None = None, modality: str | None = None,
                  body_part: str | None = None) -> list[Doc]:
    """The newest version of every template matching the filters, by id."""
    where: Doc = {}
    if kind is not None:
        where["kind"] = kind
    if body_part is not None:
        where["body_part"] = body_part
    newest: dict[str, Doc] = {}
    for doc in await store.find(COLLECTION, where, sort=(("template_id", 1), ("version", 1))):
        newest[doc["template_id"]] = doc
    out = list(newest.values())
    if modality is not None:
        out = [t for t in out if not t["modalities"] or modality in t["modalities"]]
    return out


async def save(tx: Transaction, content: Doc, *, scope: str, by: str, at: str, expect: int | None = None) -> Doc:
    """Store ``content`` as the next version of its template; ``expect`` is the version the editor saw."""
    before = await latest(tx, content["id"])
    if before is not None and before["scope"] != scope:
        raise Conflict(f"template {content['id']} belongs to {before['scope']}, not {scope}")
    if expect is not None and (before["version"] if before else 0) != expect:
        raise Conflict(f"template {content['id']} is at version {before['version'] if before else 0}, "
                       f"not {expect}; reload it and edit again")
    number = (before["version"] if before else 0) + 1
    doc = {**{k: content[k] for k in templates.CONTENT}, "id": f"{content['id']}@{number}",
           "template_id": content["id"], "version": number, "scope": scope, "created_by": by, "created_at": at}
    try:
        await tx.insert(COLLECTION, doc)
    except DuplicateKey:
        raise Conflict(f"template {content['id']} version {number} was saved concurrently; reload it") from None
    return doc


def read_shipped(directory: Path) -> list[Doc]:
    """The consortium templates in ``directory`` (``*.yaml``, one template each), checked."""
    out = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            out.append(templates.parse(yaml.safe_load(path.read_text(encoding="utf-8"))))
        except (Invalid, yaml.YAMLError) as exc:
            raise SystemExit(f"{path}: {exc}") from None
    return out


async def load_shipped(store: Store, *, at: str, directory: Path | None = None) -> int:
    """Store every shipped template whose content is new; how many versions were added."""
    directory = directory or shipped_dir()
    if not directory.is_dir():
        log.warning("no report templates directory", extra={"path": str(directory)})
        return 0
    added = 0
    for content in read_shipped(directory):
        async with store.transaction() as tx:
            before = await latest(tx, content["id"])
            if before is not None and templates.same_content(before, content):
                continue
            if before is not None and before["scope"] != "consortium":
                log.warning("shipped template id taken by a centre's template", extra={"template": content["id"]})
                continue
            try:
                await save(tx, content, scope="consortium", by=SYSTEM, at=at)
            except Conflict:
                continue  # another process loaded it at the same moment
            added += 1
    if added:
        log.info("report templates loaded", extra={"versions_added": added, "path": str(directory)})
    return added
