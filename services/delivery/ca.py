"""The embedded consortium CA: one certificate authority and one signing key per reader.

The default for a consortium without a CA of its own (``yilian ca init`` / ``yilian ca issue
USER``; the delivery worker issues a missing reader's key on first need).  Files under
``<data dir>/ca/`` (mode 0600, the directory 0700)::

    ca.cert.pem  ca.key.pem                 the consortium's root
    signers/<user>.cert.pem  <user>.key.pem  one per signing reader

Private keys are PEM PKCS#8 encrypted with ``YILIAN_CA_SECRET``, else with a secret generated
once into ``<data dir>/ca.secret`` (like ``jwt.secret``).  A real CA, a hardware key or an SM2
signer replaces this module behind :class:`services.delivery.signing.Signer`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..core.fsync import fsync_path
from ..core.settings import generated_secret

SECRET_ENV = "YILIAN_CA_SECRET"
SECRET_FILE = "ca.secret"
CA_YEARS, SIGNER_YEARS = 30, 10  # a report is kept 15–30 years; its signature is checked at its signing time
KEY_BITS = 2048  # RSA: what every PDF reader (Acrobat, poppler/NSS) verifies
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CAError(RuntimeError):
    """The CA cannot be used as asked (no CA yet, wrong secret, unreadable files)."""


def file_name(user_id: str) -> str:
    """A user id as a file name: itself when harmless, else a digest of it."""
    if _SAFE.fullmatch(user_id) and not user_id.startswith("."):
        return user_id
    return "u-" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes  # encrypted


@dataclass(frozen=True)
class ConsortiumCA:
    """Picklable (paths and the secret): the PDF worker process gets a copy."""

    directory: Path
    secret: str
    organization: str = "Yilian consortium"

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, organization: str = "Yilian consortium",
                     env: dict[str, str] | None = None) -> ConsortiumCA:
        env = os.environ if env is None else env
        secret = env.get(SECRET_ENV) or generated_secret(Path(data_dir) / SECRET_FILE)
        return cls(Path(data_dir) / "ca", secret, organization)

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.cert.pem"

    def signer_paths(self, user_id: str) -> tuple[Path, Path]:
        name = file_name(user_id)
        return self.directory / "signers" / f"{name}.cert.pem", self.directory / "signers" / f"{name}.key.pem"

    def exists(self) -> bool:
        return self.cert_path.is_file()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One issuer at a time across processes (the API, the PDF worker and ``yilian ca``)."""
        (self.directory / "signers").mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def init(self) -> bool:
        """Create the root if there is none; whether it was created."""
        with self._locked():
            if self.exists():
                return False
            key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
            name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                              x509.NameAttribute(NameOID.COMMON_NAME, f"{self.organization} CA")])
            now = datetime.now(UTC)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                    .not_valid_after(now + timedelta(days=365 * CA_YEARS))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                 key_encipherment=False, data_encipherment=False,
                                                 key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                    .sign(key, hashes.SHA256()))
            _write(self.directory / "ca.key.pem", self._encrypt(key))
            _write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
            return True

    def issue(self, user_id: str, name: str = "", *, replace: bool = False) -> Issued:
        """The reader's key and certificate, created (and the root with them) if missing."""
        cert_path, key_path = self.signer_paths(user_id)
        if not replace and cert_path.is_file() and key_path.is_file():
            return Issued(cert_path.read_bytes(), key_path.read_bytes())
        self.init()
        with self._locked():
            if not replace and cert_path.is_file() and key_path.is_file():  # another process was first
                return Issued(cert_path.read_bytes(), key_path.read_bytes())
            ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            ca_key = self._decrypt((self.directory / "ca.key.pem").read_bytes())
            key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
            subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                                 x509.NameAttribute(NameOID.USER_ID, user_id),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name or user_id)])
            now = datetime.now(UTC)
            cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - timedelta(minutes=5))
                    .not_valid_after(min(now + timedelta(days=365 * SIGNER_YEARS), ca_cert.not_valid_after_utc))
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                                 key_encipherment=False, data_encipherment=False,
                                                 key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                   critical=False)
                    .sign(ca_key, hashes.SHA256()))
            issued = Issued(cert.public_bytes(serialization.Encoding.PEM), self._encrypt(key))
            _write(key_path, issued.key_pem)
            _write(cert_path, issued.cert_pem)
            return issued

    def root_pem(self) -> bytes:
        try:
            return self.cert_path.read_bytes()
        except FileNotFoundError:
            raise CAError(f"no consortium CA at {self.directory}: run `yilian ca init`") from None

    def _encrypt(self, key: rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(self.secret.encode()))

    def _decrypt(self, pem: bytes) -> rsa.RSAPrivateKey:
        try:
            key = serialization.load_pem_private_key(pem, self.secret.encode())
        except (ValueError, TypeError) as exc:
            raise CAError(f"cannot decrypt a key under {self.directory}: {SECRET_ENV} (or {SECRET_FILE}) is not "
                          "the secret it was encrypted with") from exc
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


def _write(path: Path, data: bytes) -> None:
    """Atomically, mode 0600 from the start (a key is never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)  # the new name survives a crash too


TRUST_ENV = "YILIAN_SIGNATURE_TRUST_ROOTS"


def trusted_roots_pem(data_dir: Path, env: dict[str, str] | None = None) -> list[bytes]:
    """The roots a verifier trusts: the embedded CA's (if this data dir has one), and the PEM
    files named in ``YILIAN_SIGNATURE_TRUST_ROOTS`` (comma-separated: a real CA's, a TSA's)."""
    env = os.environ if env is None else env
    pems = []
    own = Path(data_dir) / "ca" / "ca.cert.pem"
    if own.is_file():
        pems.append(own.read_bytes())
    for name in (env.get(TRUST_ENV) or "").split(","):
        if name.strip():
            try:
                pems.append(Path(name.strip()).read_bytes())
            except OSError as exc:
                raise CAError(f"{TRUST_ENV}: cannot read {name.strip()!r}: {exc}") from exc
    return pems
