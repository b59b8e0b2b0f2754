"""C-MOVE to a destination registered with ``tls: true``: the sub-association is DICOM TLS.

A test CA signs the certificates, as a consortium's own CA would: the gateway's
(``YILIAN_DICOM_TLS_CA/CERT/KEY``) and the clinic's, whose DCMTK storescp receives the
move over TLS, requiring and verifying the gateway's client certificate; the gateway
verifies storescp's against the CA.  DCMTK movescu is the requester.  A destination whose
certificate the CA did not sign gets nothing: every sub-operation fails, final status 0xA702.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from services.core.consortium import parse_consortium

from ..dicom_samples import dataset_bytes, make_study, storescu
from ..support import EXAMPLE_CONSORTIUM, free_port
from .conftest import CHENGGUAN_CT, COUNTY_RWS, Gateway, run
from .test_query_retrieve import dimse_values, final_status, received, wait_listening

pytestmark = pytest.mark.timeout(120)

MOVESCU, STORESCP = "/usr/bin/movescu", "/usr/bin/storescp"
DESTINATION = "CG_TERM"  # Chengguan township's own SCP in the example consortium


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class ConsortiumCA:
    """A throw-away certificate authority in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key, self.cert = directory / "ca.key", directory / "ca.pem"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
                 "-days", "2", "-subj", "/CN=Yilian test consortium CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str) -> tuple[Path, Path]:
        """A key and a certificate for ``name`` (IP 127.0.0.1), signed by this CA."""
        key, csr, cert = (self.directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
        ext = self.directory / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
                 "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return key, cert


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1")
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, tuple[Path, Path] | Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = ConsortiumCA(directory)
    return {"ca": ca.cert, **{name: ca.issue(name) for name in ("gateway", "clinic")},
            "rogue": self_signed(directory, "rogue")}


@pytest.fixture
async def tls_gateway(make_gateway, pki, tmp_path) -> tuple[Gateway, list[Path]]:
    """A gateway with the consortium's CA and its own certificate, holding one study from Chengguan.

    With a certificate and key at start the gateway's own port would be TLS too, and DCMTK
    movescu (3.6.7) cannot do TLS; so it starts with the CA only (clear-text port) and is
    given its certificate and key afterwards: what it presents on the associations it opens.
    """
    gateway = await make_gateway(dicom_tls_ca=str(pki["ca"]))
    key, cert = pki["gateway"]
    gateway.rt.settings = dataclasses.replace(gateway.rt.settings, dicom_tls_cert=str(cert), dicom_tls_key=str(key))
    study = make_study(tmp_path / "in", series=1, instances=3, patient_id="CG-TLS")
    stored = await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)
    assert stored.returncode == 0, stored.output
    assert await gateway.count("instances") == 3
    gateway.study_uid = study.study_uid
    return gateway, study.files


@pytest.fixture
async def tls_storescp(tmp_path):
    """Start DCMTK storescp as ``CG_TERM`` over TLS with the given key and certificate (client cert required)."""
    started: list[subprocess.Popen] = []

    async def start(key: Path, cert: Path, ca: Path) -> tuple[int, Path]:
        port, out = free_port(), tmp_path / f"storescp{len(started)}"
        out.mkdir()
        proc = subprocess.Popen([STORESCP, "+tls", str(key), str(cert), "+cf", str(ca), "-aet", DESTINATION,
                                 "-od", str(out), "+B", "+xa", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        await wait_listening(port, "storescp (TLS)", proc)
        return port, out

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def register_tls_destination(gateway: Gateway, port: int) -> None:
    """Point Chengguan's registered SCP at the test's storescp and mark it ``tls: true``."""
    data = yaml.safe_load(EXAMPLE_CONSORTIUM.read_text("utf-8"))
    (org,) = [o for o in data["organizations"] if (o.get("scp") or {}).get("ae_title") == DESTINATION]
    org["scp"].update(port=port, tls=True)
    gateway.rt.consortium = parse_consortium(yaml.safe_dump(data, allow_unicode=True))
    assert gateway.rt.consortium.endpoint(DESTINATION).tls


async def movescu(gateway: Gateway) -> str:
    result = await run(subprocess.run, [MOVESCU, "-d", "-S", "-aet", COUNTY_RWS,
                                        "-aec", gateway.ae_title, "-aem", DESTINATION,
                                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={gateway.study_uid}",
                                        "127.0.0.1", str(gateway.port)],
                       capture_output=True, text=True, errors="replace", timeout=60)
    return result.stdout + result.stderr


async def test_c_move_to_a_tls_destination_verifies_it_and_presents_our_certificate(tls_gateway, tls_storescp, pki):
    gateway, files = tls_gateway
    key, cert = pki["clinic"]
    port, out = await tls_storescp(key, cert, pki["ca"])  # storescp requires a client certificate from the CA
    register_tls_destination(gateway, port)
    log = await movescu(gateway)
    assert final_status(log) == "0x0000", log
    assert dimse_values(log, "Completed Suboperations")[-1] == "3"
    got = received(out)
    sent = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}
    assert set(got) == set(sent)
    for uid, path in sent.items():
        assert dataset_bytes(got[uid]) == dataset_bytes(path)  # streamed as stored, over TLS


async def test_c_move_to_a_destination_whose_certificate_does_not_verify_fails_its_sub_operations(
        tls_gateway, tls_storescp, pki, caplog):
    gateway, _ = tls_gateway
    key, cert = pki["rogue"]  # self-signed: not the consortium CA's
    port, out = await tls_storescp(key, cert, pki["ca"])
    register_tls_destination(gateway, port)
    with caplog.at_level(logging.ERROR, logger="yilian.pacs_gateway.retrieve"):
        log = await movescu(gateway)
    # PS3.4 C.4.2: the destination is known (not 0xA801); no sub-operation could be performed.
    assert final_status(log) == "0xa702", log
    assert dimse_values(log, "Failed Suboperations")[-1] == "3"
    assert dimse_values(log, "Completed Suboperations")[-1] == "0"
    assert received(out) == {}
    failures = [r for r in caplog.records if r.getMessage().startswith("C-MOVE destination association failed")]
    assert failures and failures[0].destination == DESTINATION and failures[0].tls is True
