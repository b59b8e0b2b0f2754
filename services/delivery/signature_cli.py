"""``yilian ca init | issue USER | root`` and ``yilian verify FILE`` (offline; docs/reports.md, Signature)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.consortium import load_consortium
from ..core.settings import Settings

if TYPE_CHECKING:
    import pydicom

    from .ca import ConsortiumCA

# pydicom, the CA (cryptography) and verification (pyHanko) load in the commands that use them: every
# ``yilian`` command builds these parsers.

PDF_MAGIC = b"%PDF-"


def _ca(args: argparse.Namespace) -> tuple[ConsortiumCA, Any]:
    from .ca import ConsortiumCA
    settings = Settings.from_env(consortium=args.consortium)
    consortium = load_consortium(settings.consortium_path)
    return ConsortiumCA.for_data_dir(settings.data_dir, organization=consortium.name), consortium


def cmd_ca(args: argparse.Namespace) -> int:
    from .ca import CAError
    ca, consortium = _ca(args)
    try:
        if args.ca_command == "init":
            made = ca.init()
            print(f"{'created' if made else 'already there'}: {ca.cert_path}")
        elif args.ca_command == "issue":
            user = consortium.users.get(args.user)
            if user is None:
                print(f"yilian ca issue: no user {args.user!r} in the consortium file", file=sys.stderr)
                return 2
            ca.issue(user.id, user.name, replace=args.replace)
            print(f"{ca.signer_paths(user.id)[0]}")
        else:  # root
            sys.stdout.write(ca.root_pem().decode())
    except CAError as exc:
        print(f"yilian ca: {exc}", file=sys.stderr)
        return 2
    return 0


def read_document(path: Path) -> tuple[bytes | None, pydicom.Dataset | None]:
    """A PDF, or a DICOM file: an Encapsulated PDF (its document, without the even-length pad) or an SR."""
    import pydicom
    data = path.read_bytes()
    if data.startswith(PDF_MAGIC):
        return data, None
    ds = pydicom.dcmread(path)
    if "EncapsulatedDocument" in ds:
        doc = bytes(ds.EncapsulatedDocument)
        length = int(ds.get("EncapsulatedDocumentLength") or len(doc))
        return doc[:length], ds
    return None, ds


def named_by_sr(ds: pydicom.Dataset) -> dict[str, str]:
    """What an SR says of its signed PDF: report id and version, the PDF's UID and SHA-256."""
    from . import sr
    out: dict[str, str] = {}
    codes = {sr.REPORT_ID[0]: "report_id", sr.REPORT_VERSION[0]: "report_version", sr.PDF_SHA256[0]: "pdf_sha256"}
    for item in ds.get("ContentSequence") or []:
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if concept in codes and "TextValue" in item:
            out[codes[concept]] = str(item.TextValue)
        elif concept == sr.SIGNED_PDF[0]:
            out["pdf_sop_instance_uid"] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    import pydicom

    from .ca import CAError, trusted_roots_pem
    from .verification import roots_from_pem, verify
    try:
        pdf, ds = read_document(Path(args.file))
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        print(f"yilian verify: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if pdf is None:  # an SR: what it names, and whether the PDF given beside it is that one
        named = named_by_sr(ds)
        if not named.get("pdf_sha256"):
            print(f"yilian verify: {args.file} is neither a PDF nor a DICOM object naming a signed PDF",
                  file=sys.stderr)
            return 2
        result: dict[str, Any] = {"sr": str(ds.SOPInstanceUID), **named}
        if args.pdf:
            other, _ = read_document(Path(args.pdf))
            result["pdf_matches"] = other is not None and hashlib.sha256(other).hexdigest() == named["pdf_sha256"]
        print(json.dumps(result, ensure_ascii=False, indent=1) if args.json else
              "\n".join(f"{k}: {v}" for k, v in result.items()))
        return 0 if result.get("pdf_matches", True) else 1
    try:
        settings = Settings.from_env(consortium=args.consortium)
        pems = trusted_roots_pem(settings.data_dir) + [Path(p).read_bytes() for p in args.root]
    except (CAError, OSError) as exc:
        print(f"yilian verify: {exc}", file=sys.stderr)
        return 2
    checked = verify(pdf, roots_from_pem(*pems))
    if ds is not None:
        checked["sop_instance_uid"] = str(ds.SOPInstanceUID)
    if args.json:
        print(json.dumps(checked, ensure_ascii=False, indent=1))
    else:
        print(_text(args.file, checked, trusted_roots=len(pems)))
    return 0 if checked["valid"] else 1


def _text(name: str, checked: dict[str, Any], *, trusted_roots: int) -> str:
    lines = [f"{name}: {'VALID' if checked['valid'] else 'NOT VALID'}", f"  sha256: {checked['sha256']}"]
    if checked.get("error"):
        lines.append(f"  error: {checked['error']}")
    for s in checked["signatures"]:
        signer = s.get("signer") or {}
        lines += [f"  signature {s['field']}:",
                  f"    signed by: {signer.get('common_name')} ({signer.get('user_id')})",
                  f"    signing time: {s.get('signing_time')}",
                  f"    certificate: serial {signer.get('serial_number')}, issuer {signer.get('issuer')}, "
                  f"sha256 {signer.get('sha256_fingerprint')}",
                  f"    intact: {s['intact']}  valid: {s['valid']}  trusted: {s['trusted']} "
                  f"(roots: {trusted_roots})  whole file: {s.get('whole_file')}"]
        if s.get("timestamp"):
            ts = s["timestamp"]
            lines.append(f"    timestamp: {ts['time']} by {ts['authority']} (valid: {ts['valid']}, "
                         f"trusted: {ts['trusted']})")
        if s.get("error"):
            lines.append(f"    error: {s['error']}")
    return "\n".join(lines)


def add_parsers(sub: Any, consortium_arg: Any) -> None:
    ca = sub.add_parser("ca", help="the embedded consortium CA that signs report PDFs",
                        description="The embedded consortium CA under $YILIAN_DATA_DIR/ca (keys encrypted with "
                                    "YILIAN_CA_SECRET, else with the generated $YILIAN_DATA_DIR/ca.secret). "
                                    "The delivery service creates the CA and a reader's key on first need; "
                                    "these commands do it ahead of time.")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="CA_COMMAND")
    ca_sub.add_parser("init", help="create the consortium CA if there is none")
    issue = ca_sub.add_parser("issue", help="issue a signing key and certificate for a user of the consortium")
    issue.add_argument("user", metavar="USER_ID")
    issue.add_argument("--replace", action="store_true", help="a new key even if the user has one")
    ca_sub.add_parser("root", help="print the CA certificate (PEM), for verifiers")
    consortium_arg(ca)
    ca.set_defaults(func=cmd_ca)

    ver = sub.add_parser("verify", help="check a report PDF's electronic signature offline",
                         description="Who signed FILE (a report PDF, or the Encapsulated PDF DICOM object a "
                                     "terminal received), when, with which certificate, and whether it is intact. "
                                     "Trusts the CA of $YILIAN_DATA_DIR, YILIAN_SIGNATURE_TRUST_ROOTS and --root. "
                                     "Given the SR instead, prints the report version and PDF digest it names. "
                                     "Exit status 0 valid, 1 not valid, 2 unreadable.")
    ver.add_argument("file", metavar="FILE")
    ver.add_argument("--root", action="append", default=[], metavar="PEM", help="a trusted root certificate")
    ver.add_argument("--pdf", metavar="FILE", help="with an SR: the PDF (or its DICOM object) to match")
    ver.add_argument("--json", action="store_true", help="print the verification as JSON")
    consortium_arg(ver)
    ver.set_defaults(func=cmd_verify)
