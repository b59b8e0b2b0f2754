"""The report PDF's electronic signature (issue 14): the embedded consortium CA, the PAdES signature
of the releasing reader, its verification by Yilian and by an independent verifier (poppler's
``pdfsig``), a one-byte change failing both, a trusted timestamp from a local RFC 3161 TSA, and
the delivered SR and PDF naming each other.  The signed PDF is rendered to PNG under
test-artifacts/delivery/ for a person to look at."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jsonschema import Draft202012Validator
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from services.api.validation import spec
from services.cli import main
from services.delivery.ca import CAError, ConsortiumCA
from services.delivery.pdf import render
from services.delivery.settings import DEFAULT_FONT
from services.delivery.signature_cli import named_by_sr, read_document
from services.delivery.signing import PadesSigner
from services.delivery.verification import roots_from_pem, verify

from ..support import free_port

PDFSIG, PDFTOPPM = "/usr/bin/pdfsig", "/usr/bin/pdftoppm"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "delivery"
RESULT = {"id": "rp-sig", "report_id": "rp-sig", "kind": "imaging", "source": "report", "critical": False,
          "findings": "双肺纹理清晰，未见实变影。", "impression": "胸部正位片未见明显异常。", "reader_id": "dr-wang",
          "reader_name": "王建国", "signed_at": "2026-12-02T10:00:00.000Z", "report_version": 1,
          "sr_sop_instance_uid": "1.2.826.0.1.3680043.10.9.1", "pdf_sop_instance_uid": "1.2.826.0.1.3680043.10.9.2"}


def pdfsig(path: Path) -> str:
    done = subprocess.run([PDFSIG, str(path)], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


@pytest.fixture
def signed(tmp_path):
    ca = ConsortiumCA.for_data_dir(tmp_path, env={})
    pdf = render(RESULT, study={}, institution="城关镇卫生院", centre="县域影像诊断中心", font=DEFAULT_FONT)
    return ca, PadesSigner(ca, names={"dr-wang": "王建国"}).sign(pdf, "dr-wang")


# --- the embedded CA ------------------------------------------------------------------------

def test_the_ca_and_a_readers_key_are_made_on_first_need_owner_only_and_encrypted(signed, tmp_path):
    ca, _ = signed
    cert_path, key_path = ca.signer_paths("dr-wang")
    for path in (ca.cert_path, ca.directory / "ca.key.pem", cert_path, key_path, tmp_path / "ca.secret"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert ca.directory.stat().st_mode & 0o777 == 0o700
    for key in (ca.directory / "ca.key.pem", key_path):
        assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "dr-wang"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "王建国"
    # the same key next time; a wrong secret cannot open it
    assert ca.issue("dr-wang").cert_pem == cert_path.read_bytes()
    with pytest.raises(CAError, match="YILIAN_CA_SECRET"):
        ConsortiumCA(ca.directory, "not-the-secret").issue("dr-li")


def test_the_ca_secret_comes_from_the_environment_when_set(tmp_path):
    ca = ConsortiumCA.for_data_dir(tmp_path, env={"YILIAN_CA_SECRET": "s" * 40})
    ca.issue("dr-wang")
    assert not (tmp_path / "ca.secret").exists()
    assert ca.secret == "s" * 40


def test_yilian_ca_init_and_issue(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YILIAN_DATA_DIR", str(tmp_path))
    assert main(["ca", "init"]) == 0
    assert (tmp_path / "ca" / "ca.cert.pem").is_file()
    assert main(["ca", "issue", "dr-wang"]) == 0
    assert (tmp_path / "ca" / "signers" / "dr-wang.key.pem").stat().st_mode & 0o777 == 0o600
    assert main(["ca", "issue", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err


# --- signature and verification -------------------------------------------------------------

def test_a_signed_pdf_says_who_signed_when_with_which_certificate(signed, tmp_path):
    ca, pdf = signed
    checked = verify(pdf, roots_from_pem(ca.root_pem()))
    assert checked["valid"], checked
    [sig] = checked["signatures"]
    assert sig["signer"]["user_id"] == "dr-wang" and sig["signer"]["common_name"] == "王建国"
    assert sig["subfilter"] == "/ETSI.CAdES.detached" and sig["md_algorithm"] == "sha256"
    signing_time = datetime.fromisoformat(sig["signing_time"].replace("Z", "+00:00"))
    assert abs(signing_time - datetime.now(UTC)) < timedelta(minutes=5)
    cert = x509.load_pem_x509_certificate(ca.signer_paths("dr-wang")[0].read_bytes())
    assert sig["signer"]["sha256_fingerprint"] == cert.fingerprint(hashes.SHA256()).hex()
    # without the consortium's root the signature is intact but not trusted
    untrusted = verify(pdf, [])
    assert not untrusted["valid"] and untrusted["signatures"][0]["intact"]
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    out = pdfsig(path)
    assert "Signature Validation: Signature is Valid." in out, out
    assert "UID=dr-wang" in out and "Total document signed" in out, out


def test_changing_any_one_byte_fails_every_verifier(signed, tmp_path):
    ca, pdf = signed
    roots = roots_from_pem(ca.root_pem())
    start = pdf.rindex(b"/ByteRange")
    contents = pdf.rindex(b"/Contents <") + len(b"/Contents <")
    # the page content, the signature dictionary, the signature (CMS) itself, the final xref and trailer
    for at in (len(pdf) // 4, start + 3, contents + 40, contents + 1000, len(pdf) - 40, len(pdf) - 3):
        bad = flipped(pdf, at)
        assert not verify(bad, roots)["valid"], at
        path = tmp_path / f"bad-{at}.pdf"
        path.write_bytes(bad)
        assert "Signature Validation: Signature is Valid." not in pdfsig(path), at
    # Yilian's verifier over the whole file, one byte in every 61
    missed = [at for at in range(0, len(pdf), 61) if verify(flipped(pdf, at), roots)["valid"]]
    assert missed == []
    # bytes appended after signing: intact but not the whole file
    assert not verify(pdf + b"\n% appended\n", roots)["valid"]


def test_yilian_verify_offline(signed, tmp_path, monkeypatch, capsys):
    ca, pdf = signed
    monkeypatch.setenv("YILIAN_DATA_DIR", str(tmp_path))  # its CA is the trusted root
    good, bad = tmp_path / "good.pdf", tmp_path / "bad.pdf"
    good.write_bytes(pdf)
    bad.write_bytes(flipped(pdf, len(pdf) // 3))
    assert main(["verify", str(good)]) == 0
    out = capsys.readouterr().out
    assert "VALID" in out and "王建国 (dr-wang)" in out and "signing time: 20" in out
    assert main(["verify", str(bad)]) == 1
    assert "NOT VALID" in capsys.readouterr().out
    (tmp_path / "junk").write_bytes(b"not a document")
    assert main(["verify", str(tmp_path / "junk")]) == 2


# --- trusted time: a local RFC 3161 time-stamping authority ----------------------------------

def _tsa_certificate() -> tuple[bytes, asn1_x509.Certificate, asn1_keys.PrivateKeyInfo]:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA Root")])
    now = datetime.now(UTC)
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name).public_key(root_key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA")]))
            .issuer_name(root_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(root_key, hashes.SHA256()))
    der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (root.public_bytes(serialization.Encoding.PEM),
            asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
            asn1_keys.PrivateKeyInfo.load(der_key))


@pytest.fixture
def tsa():
    """An RFC 3161 TSA over HTTP on loopback (pyHanko's test time stamper behind http.server)."""
    root_pem, cert, key = _tsa_certificate()
    stamper = DummyTimeStamper(tsa_cert=cert, tsa_key=key)
    asked: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/timestamp-query"
            answer = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
            asked.append(len(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tsa", root_pem, asked
    server.shutdown()
    server.server_close()


def test_with_a_time_stamping_authority_the_signature_carries_its_token(tsa, tmp_path):
    url, tsa_root, asked = tsa
    ca = ConsortiumCA.for_data_dir(tmp_path, env={})
    pdf = render(RESULT, study={}, institution="城关镇卫生院", centre="县域影像诊断中心", font=DEFAULT_FONT)
    signer = PadesSigner(ca, names={"dr-wang": "王建国"}, tsa_url=url)
    signed = [signer.sign(pdf, "dr-wang") for _ in range(2)]  # the second reuses the first's exact size
    assert len(asked) >= 2
    for one in signed:
        checked = verify(one, roots_from_pem(ca.root_pem(), tsa_root))
        assert checked["valid"], checked
        ts = checked["signatures"][0]["timestamp"]
        assert ts["valid"] and ts["trusted"] and "Test TSA" in ts["authority"]
        assert abs(datetime.fromisoformat(ts["time"].replace("Z", "+00:00")) - datetime.now(UTC)) < timedelta(minutes=5)
        # the TSA's root not trusted: the token is intact but not trusted, the signature itself still is
        assert verify(one, roots_from_pem(ca.root_pem()))["signatures"][0]["timestamp"]["trusted"] is False
    path = tmp_path / "stamped.pdf"
    path.write_bytes(signed[0])
    assert "Signature Validation: Signature is Valid." in pdfsig(path)


def test_an_unreachable_time_stamping_authority_fails_the_signing_loudly(tmp_path):
    ca = ConsortiumCA.for_data_dir(tmp_path, env={})
    signer = PadesSigner(ca, tsa_url=f"http://127.0.0.1:{free_port()}/tsa", tsa_timeout=2)
    pdf = render(RESULT, study={}, institution="x", centre="y", font=DEFAULT_FONT)
    with pytest.raises(Exception):  # noqa: B017 - the delivery attempt records it and retries later
        signer.sign(pdf, "dr-wang")


# --- delivered: the clinic's terminal receives a signed PDF and an SR naming it ---------------

@pytest.mark.dcmtk
async def test_the_delivered_pdf_is_signed_and_the_sr_names_it(make_yilian, clinic_scp, tmp_path, monkeypatch):
    clinic_scp.start()
    y = await make_yilian(scp_port=clinic_scp.port)
    study_uid = await y.send_study()
    request = await y.sign(study_uid)
    report_id = request["report_id"]
    await y.delivered(report_id)
    files = [pydicom.dcmread(p) for p in clinic_scp.files()]
    [pdf_ds] = [ds for ds in files if ds.Modality == "DOC"]
    [sr_ds] = [ds for ds in files if ds.Modality == "SR"]
    pdf, _ = read_document(clinic_scp.directory / next(p.name for p in clinic_scp.files()
                                                         if pydicom.dcmread(p).Modality == "DOC"))
    digest = hashlib.sha256(pdf).hexdigest()
    # the SR names the PDF (UID and digest) and the report version; the PDF names the SR
    named = named_by_sr(sr_ds)
    assert named == {"report_id": report_id, "report_version": "1", "pdf_sop_instance_uid": pdf_ds.SOPInstanceUID,
                     "pdf_sha256": digest}
    assert sr_ds.SOPInstanceUID.encode() in pdf
    # Yilian's API says who signed and that the kept copy is the delivered one
    body = await y.ok("GET", f"/api/v1/reports/{report_id}/verification", "cg-clinic")
    assert body["valid"] and body["sha256"] == digest == body["recorded_sha256"]
    assert body["signatures"][0]["signer"]["user_id"] == "dr-wang" and body["report_version"] == 1
    Draft202012Validator(spec()["components"]["schemas"]["ReportVerification"]).validate(body)  # as documented
    # scoped like the report: another clinic does not learn it exists
    status, _ = await y.call("GET", f"/api/v1/reports/{report_id}/verification", "db-clinic")
    assert status == 404
    # the desk's print: the very bytes delivered, scoped and audited like the result
    async with y.session.get(f"{y.base}/api/v1/results/{report_id}/pdf",
                             headers={"Authorization": f"Bearer {y.token('cg-clinic')}"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/pdf"
        assert hashlib.sha256(await resp.read()).hexdigest() == digest
    assert (await y.call("GET", f"/api/v1/results/{report_id}/pdf", "db-clinic"))[0] == 404
    [read] = await y.rt.store.find("audit", {"action": "result.pdf", "actor": "cg-clinic"})
    assert read["resource"] == f"result/{report_id}" and read["detail"]["sha256"] == digest
    # yilian verify takes the terminal's DICOM objects as they are: the Encapsulated PDF, and the SR with it
    monkeypatch.setenv("YILIAN_DATA_DIR", str(y.rt.settings.data_dir))
    by_modality = {pydicom.dcmread(p).Modality: p for p in clinic_scp.files()}
    assert await asyncio.to_thread(main, ["verify", str(by_modality["DOC"])]) == 0  # (no event loop, as a shell)
    assert await asyncio.to_thread(main, ["verify", str(by_modality["SR"]), "--pdf", str(by_modality["DOC"])]) == 0
    # pdfsig verifies the delivered PDF and fails on a one-byte change
    path = tmp_path / "delivered.pdf"
    path.write_bytes(pdf)
    assert "Signature Validation: Signature is Valid." in pdfsig(path)
    path.write_bytes(flipped(pdf, len(pdf) // 2))
    assert "Signature Validation: Signature is Valid." not in pdfsig(path)
    # the kept copy altered in the store: the API says so
    kept = await y.rt.store.get("signed_pdfs", report_id)
    async with y.rt.store.transaction() as tx:
        await tx.put("signed_pdfs", {**kept, "pdf": base64.b64encode(flipped(pdf, len(pdf) // 2)).decode()})
    body = await y.ok("GET", f"/api/v1/reports/{report_id}/verification", "cg-clinic")
    assert not body["valid"] and body["sha256"] != body["recorded_sha256"]
    # for a person to look at
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    signed_copy = ARTIFACTS / "signed-report.pdf"
    signed_copy.write_bytes(pdf)
    done = await asyncio.to_thread(subprocess.run, [PDFTOPPM, "-png", "-r", "80", "-singlefile", str(signed_copy),
                                                    str(ARTIFACTS / "signed-report")], capture_output=True, timeout=60)
    assert done.returncode == 0 and (ARTIFACTS / "signed-report.png").stat().st_size > 10_000


@pytest.mark.dcmtk
async def test_no_signed_pdf_before_the_first_dicom_delivery_is_a_clear_404(make_yilian, clinic_scp):
    y = await make_yilian(scp_port=clinic_scp.port)  # the terminal is down: nothing delivered yet
    study_uid = await y.send_study()
    request = await y.sign(study_uid)
    report_id = request["report_id"]
    status, body = await y.call("GET", f"/api/v1/reports/{report_id}/verification", "cg-clinic")
    if status == 200:  # the worker already signed (it does so before trying the association)
        assert body["valid"]
    else:
        assert status == 404 and "no signed PDF yet" in body["detail"]
        status, body = await y.call("GET", f"/api/v1/results/{report_id}/pdf", "cg-clinic")
        assert status == 404 and "no signed PDF yet" in body["detail"]
    status, _ = await y.call("GET", "/api/v1/reports/rp-nope/verification", "cg-clinic")
    assert status == 404


async def test_a_clinic_without_a_terminal_fetches_the_same_signed_pdf(make_yilian, tmp_path):
    """No DICOM SCP: the signed PDF is made at release all the same, and the clinic (its HIS, a browser)
    fetches it through the API, scoped, audited, released reports only."""
    y = await make_yilian(scp_port=None)
    study_uid = await y.send_study()
    report_id = (await y.sign(study_uid))["report_id"]
    await y.delivered(report_id, "document")
    assert set(await y.deliveries(report_id)) == {"inbox", "document"}  # no terminal, no webhook configured
    async with y.session.get(f"{y.base}/api/v1/reports/{report_id}/document",
                             headers={"Authorization": f"Bearer {y.token('cg-clinic')}"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/pdf"
        pdf, etag = await resp.read(), resp.headers["ETag"]
    digest = hashlib.sha256(pdf).hexdigest()
    assert etag == f'"{digest}"'
    body = await y.ok("GET", f"/api/v1/reports/{report_id}/verification", "cg-clinic")
    assert body["valid"] and body["sha256"] == digest and body["signatures"][0]["signer"]["user_id"] == "dr-wang"
    path = tmp_path / "fetched.pdf"
    path.write_bytes(pdf)
    assert "Signature Validation: Signature is Valid." in pdfsig(path)
    # another clinic does not learn it exists; an unknown report is a clear 404; each fetch is audited
    status, _ = await y.call("GET", f"/api/v1/reports/{report_id}/document", "db-clinic")
    assert status == 404
    status, problem = await y.call("GET", "/api/v1/reports/rp-nope/document", "cg-clinic")
    assert status == 404 and "rp-nope" in problem["detail"]
    audit = await y.rt.store.find("audit", {"action": "report.document"}, sort=[("seq", 1)])
    assert [(a["actor"], a["outcome"]) for a in audit if a["resource"] == f"report/{report_id}"][:1] == \
        [("cg-clinic", "success")]


# --- who signs a two-level sign-off, and which version -------------------------------------

def test_the_reviewer_who_releases_signs_and_the_released_version_is_named(tmp_path):
    from services.core.localtime import LocalTime
    from services.delivery.model import result_from_report
    from services.delivery.service import signer_of_result
    from services.delivery.sr import build_sr

    from .test_signoff_documents import COUNTERSIGNED, ECG_REPORT
    from .test_documents import CREATED, STUDY

    result = result_from_report({**COUNTERSIGNED, "version": 3}, at=CREATED)
    assert signer_of_result(result) == "dr-li" and result["report_version"] == 3  # 审核医生 releases
    assert signer_of_result(result_from_report({**ECG_REPORT, "reader_id": "dr-wang"}, at=CREATED)) == "dr-wang"
    for doc in (result, result_from_report({**ECG_REPORT, "version": 2}, at=CREATED)):  # Basic Text and Enhanced SR
        sr = build_sr(doc, study=STUDY, evidence=[], created=CREATED, institution="x", station="YILIAN",
                      local=LocalTime.named(), pdf_sha256="ab" * 32)
        path = tmp_path / f"{doc['id']}.dcm"
        sr.save_as(path, enforce_file_format=True)
        done = subprocess.run(["/usr/bin/dsrdump", "+Pc", str(path)], capture_output=True, timeout=30)
        out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
        assert done.returncode == 0 and "Error" not in out and "Warning" not in out, out
        assert named_by_sr(pydicom.dcmread(path)) == {
            "report_id": doc["report_id"], "report_version": str(doc["report_version"]),
            "pdf_sop_instance_uid": doc["pdf_sop_instance_uid"], "pdf_sha256": "ab" * 32}
