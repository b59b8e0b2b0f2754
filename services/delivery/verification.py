"""Who signed a report PDF, when, with which certificate, and whether it is intact; I/O free.

Shared by ``GET /api/v1/reports/{id}/verification`` and the offline ``yilian verify FILE``.
``valid`` is the bottom line: every signature intact and cryptographically valid, covering
the whole file (nothing appended after signing), its certificate chaining to a trusted root
(the consortium CA, plus any roots given).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from typing import Any

from asn1crypto import x509 as asn1_x509
from pyhanko.keys import load_certs_from_pemder_data
from pyhanko.pdf_utils.misc import PdfReadError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

Doc = dict[str, Any]

log = logging.getLogger("yilian.delivery")


def roots_from_pem(*pems: bytes) -> list[asn1_x509.Certificate]:
    return [c for pem in pems if pem for c in load_certs_from_pemder_data(pem)]


def _iso(dt: Any) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def _certificate(cert: asn1_x509.Certificate) -> Doc:
    subject = cert.subject.native
    return {"subject": cert.subject.human_friendly, "common_name": subject.get("common_name"),
            "user_id": subject.get("user_id"), "issuer": cert.issuer.human_friendly,
            "serial_number": format(cert.serial_number, "x"),
            "sha256_fingerprint": hashlib.sha256(cert.dump()).hexdigest(),
            "not_before": _iso(cert.not_valid_before), "not_after": _iso(cert.not_valid_after)}


def _unsigned_parts_changed(sig: Any) -> str | None:
    """pyHanko reads only what the signature binds; the CMS's other fields must also be as signed,
    or a one-byte change there would pass (other verifiers, pdfsig among them, reject it)."""
    signed_data, info = sig.signed_data, sig.signer_info
    if signed_data["encap_content_info"]["content_type"].native != "data":
        return "the signature's content type is not id-data"
    # RFC 5652 5.1/5.3: version 1 with an issuer-and-serial signer, 3 with a key identifier.
    expected = b"\x02\x01\x03" if info["sid"].name == "subject_key_identifier" else b"\x02\x01\x01"
    if info["version"].dump() != expected or signed_data["version"].dump() != expected:
        return "the signature's version fields are not as signed"
    if info["digest_algorithm"].dump() not in [a.dump() for a in signed_data["digest_algorithms"]]:
        return "the signature's digest algorithms do not name the one it uses"
    return None


def verify(pdf: bytes, roots: Iterable[asn1_x509.Certificate]) -> Doc:
    """The verification of ``pdf`` against ``roots``; never raises for a bad document."""
    out: Doc = {"sha256": hashlib.sha256(pdf).hexdigest(), "size": len(pdf), "signatures": [], "valid": False}
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = reader.embedded_signatures
    except Exception as exc:  # noqa: BLE001 - pyHanko asserts on some mangled files: not readable, not a crash
        out["error"] = f"not a readable PDF: {type(exc).__name__}: {exc}"
        return out
    if not embedded:
        out["error"] = "the PDF carries no signature"
        return out
    context = ValidationContext(trust_roots=list(roots), allow_fetching=False)
    for sig in embedded:
        item: Doc = {"field": sig.field_name, "intact": False, "valid": False, "trusted": False}
        try:
            status = validate_pdf_signature(sig, context)
        except (SignatureValidationError, PdfReadError, ValueError, KeyError, TypeError) as exc:
            item["error"] = f"{type(exc).__name__}: {exc}"
            out["signatures"].append(item)
            continue
        except Exception as exc:  # noqa: BLE001 - a mangled signature must read as invalid, not crash
            log.debug("signature validation failed", exc_info=True)
            item["error"] = f"{type(exc).__name__}: {exc}"
            out["signatures"].append(item)
            continue
        whole = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
        try:
            altered = _unsigned_parts_changed(sig)
        except (ValueError, KeyError, TypeError) as exc:
            altered = f"the signature does not parse: {exc}"
        item.update(intact=bool(status.intact and not altered),
                    valid=bool(status.intact and status.valid and not altered), trusted=bool(status.trusted),
                    whole_file=whole, signer=_certificate(status.signing_cert),
                    signing_time=_iso(status.signer_reported_dt), md_algorithm=status.md_algorithm,
                    subfilter=str(sig.sig_object.get("/SubFilter")))
        ts = status.timestamp_validity
        item["timestamp"] = None if ts is None else {
            "time": _iso(ts.timestamp), "intact": bool(ts.intact), "valid": bool(ts.intact and ts.valid),
            "trusted": bool(ts.trusted), "authority": _certificate(ts.signing_cert)["subject"]}
        if altered:
            item["error"] = altered
        elif not whole:
            item["error"] = "the signature does not cover the whole file (changed after signing)"
        elif not item["valid"]:
            item["error"] = "the document was changed after signing (digest mismatch)"
        elif not item["trusted"]:
            item["error"] = "the signing certificate does not chain to a trusted root"
        out["signatures"].append(item)
    out["valid"] = all(s["valid"] and s["trusted"] and s.get("whole_file") for s in out["signatures"])
    return out
