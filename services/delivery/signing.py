"""The report PDF's electronic signature: the :class:`Signer` port and the embedded PAdES signer.

The workflow knows only ``Signer.sign(pdf_bytes, signer_id) -> bytes``.  The embedded default,
:class:`PadesSigner`, signs with the reader's key from the consortium CA (services/delivery/ca.py)
as a PAdES baseline signature (ETSI.CAdES.detached, SHA-256) carrying the signing time; with a
time-stamping authority configured (``YILIAN_TSA_URL``, RFC 3161) the signature also carries its
timestamp token (PAdES-B-T).  A real CA, a hardware key or an SM2 signer is another ``Signer``.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pyhanko.keys import load_certs_from_pemder_data
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers, timestamps
from pyhanko.sign.general import SigningError
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .ca import ConsortiumCA

FIELD = "Signature1"
DIGESTS = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class Signer(ABC):
    """Signs a rendered report PDF in the name of ``signer_id`` (the releasing reader's user id)."""

    @abstractmethod
    def sign(self, pdf_bytes: bytes, signer_id: str) -> bytes: ...


class NoSigner(Signer):
    """``YILIAN_SIGNATURE=none``: the PDF as rendered (a deployment that signs elsewhere)."""

    def sign(self, pdf_bytes: bytes, signer_id: str) -> bytes:
        return pdf_bytes


class _KeptKeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner decodes (and validates) the RSA key at every signature, ~100 ms:
    this one keeps the decoded key, and answers the size-estimating dry run without signing."""

    def __init__(self, *, key: RSAPrivateKey, **kw) -> None:
        super().__init__(**kw)
        self._key = key

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(self._key.key_size // 8)
        return self.sign_raw(data, digest_algorithm)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
        if mechanism != "rsassa_pkcs1v15" or digest_algorithm not in DIGESTS:
            return super().sign_raw(data, digest_algorithm)
        return self._key.sign(data, PKCS1v15(), DIGESTS[digest_algorithm]())


def _contents(signed: bytes) -> tuple[int, int]:
    """Where the signature's /Contents hex string lies (between its ``<`` and ``>``)."""
    start = signed.rindex(b"/ByteRange")
    a, b, c, d = (int(x) for x in signed[start:signed.index(b"]", start)].split(b"[", 1)[1].split())
    return b + 1, c - 1


def cms_length(der: bytes) -> int:
    """The length of the DER object at the start of ``der`` (what follows it is padding)."""
    if der[1] < 0x80:
        return 2 + der[1]
    n = der[1] & 0x7F
    return 2 + n + int.from_bytes(der[2:2 + n], "big")


# Per process (the PDF worker gets a pickled signer per call): decoded keys and exact signature sizes,
# by (CA directory, user, certificate file's mtime) so a re-issued key is picked up.
_LOADED: dict[tuple[str, str, int], _KeptKeySigner] = {}
_RESERVED: dict[tuple[str, str, int], int] = {}


@dataclass(frozen=True)
class PadesSigner(Signer):
    """Picklable (the CA's paths and secret, names, the TSA)."""

    ca: ConsortiumCA
    names: dict[str, str] = field(default_factory=dict)  # user id -> name for a certificate issued on first need
    tsa_url: str | None = None
    tsa_timeout: float = 10.0
    location: str = ""

    def _signer(self, signer_id: str) -> tuple[_KeptKeySigner, tuple[str, str, int]]:
        cert_path, _ = self.ca.signer_paths(signer_id)
        try:
            key = (str(self.ca.directory), signer_id, cert_path.stat().st_mtime_ns)
        except FileNotFoundError:
            key = None
        loaded = _LOADED.get(key) if key else None
        if loaded is None:
            issued = self.ca.issue(signer_id, self.names.get(signer_id, ""))
            key = (str(self.ca.directory), signer_id, cert_path.stat().st_mtime_ns)
            private = serialization.load_pem_private_key(issued.key_pem, self.ca.secret.encode())
            assert isinstance(private, RSAPrivateKey)
            cert = next(iter(load_certs_from_pemder_data(issued.cert_pem)))
            # The root is not embedded: a verifier must bring its own (a root in the file proves nothing),
            # and the one certificate in the file is bound by the signed attributes.
            loaded = _LOADED[key] = _KeptKeySigner(
                key=private, signing_cert=cert, cert_registry=SimpleCertificateStore.from_certs([]),
                signing_key=asn1_keys.PrivateKeyInfo.load(private.private_bytes(
                    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
                embed_roots=False)
        return loaded, key

    def sign(self, pdf_bytes: bytes, signer_id: str) -> bytes:
        signer, cache_key = self._signer(signer_id)
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
            reason="诊断报告签发", location=self.location or None,
            name=signer.signing_cert.subject.native.get("common_name"))
        stamper = timestamps.HTTPTimeStamper(self.tsa_url, timeout=self.tsa_timeout) if self.tsa_url else None
        reserved = _RESERVED.get(cache_key)
        # A timestamp token's size varies by a byte or two (its serial number, the nonce): a few more tries.
        for _ in range(12 if stamper else 3):
            try:
                signed = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf_bytes)), meta, signer=signer,
                                          timestamper=stamper, bytes_reserved=reserved).getvalue()
            except SigningError:  # longer than the last one: a little more room, then exactly its size
                reserved = None if reserved is None else reserved + 8
                continue
            # No padding after the CMS object: a changed byte anywhere in the file breaks the signature.
            lo, hi = _contents(signed)
            der = bytes.fromhex(signed[lo:hi].decode("ascii"))
            exact = cms_length(der)
            if exact == len(der):
                _RESERVED[cache_key] = 2 * exact
                return signed
            reserved = 2 * exact  # pyHanko counts the hex digits
        raise SigningError("the signature's size did not settle (time-stamping authority answers vary in size)")


def warm(signer: Signer, signer_ids: list[str]) -> int:
    """Load (issuing where missing) the keys of ``signer_ids`` in this process, so a reader's first
    report is not slowed by it; how many are ready.  Run in the PDF worker process at start."""
    if not isinstance(signer, PadesSigner):
        return 0
    for signer_id in signer_ids:
        signer._signer(signer_id)
    return len(signer_ids)
