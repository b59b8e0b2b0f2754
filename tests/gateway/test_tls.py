"""DICOM TLS: certificate and key from configuration; DCMTK verifies the gateway's certificate."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from ..dicom_samples import echoscu, make_instance, storescu, write
from .conftest import CHENGGUAN_CT, run


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory) -> tuple[Path, Path]:
    return _certificate(tmp_path_factory.mktemp("tls"), "yilian")


async def test_tls_echo_and_store_with_the_certificate_verified(make_gateway, server_cert, tmp_path):
    key, cert = server_cert
    gateway = await make_gateway(dicom_tls_cert=str(cert), dicom_tls_key=str(key))
    tls = ["+tla", "+cf", str(cert)]  # anonymous client, server verified against our certificate
    echo = await run(echoscu, gateway.port, calling=CHENGGUAN_CT, extra=tls)
    assert echo.returncode == 0, echo.output
    path = write(make_instance(), tmp_path / "a.dcm")
    store = await run(storescu, gateway.port, [path], calling=CHENGGUAN_CT, extra=tls)
    assert store.returncode == 0, store.output
    assert await gateway.count("instances") == 1
    plain = await run(echoscu, gateway.port, calling=CHENGGUAN_CT, timeout=30, extra=["-to", "5", "-ta", "5"])
    assert plain.returncode != 0  # no clear-text DICOM on a TLS port


async def test_tls_with_a_ca_requires_a_client_certificate(make_gateway, server_cert, tmp_path):
    key, cert = server_cert
    client_key, client_cert = _certificate(tmp_path, "clinic")
    gateway = await make_gateway(dicom_tls_cert=str(cert), dicom_tls_key=str(key), dicom_tls_ca=str(client_cert))
    anonymous = await run(echoscu, gateway.port, calling=CHENGGUAN_CT, extra=["+tla", "+cf", str(cert)])
    assert anonymous.returncode != 0
    mutual = await run(echoscu, gateway.port, calling=CHENGGUAN_CT,
                       extra=["+tls", str(client_key), str(client_cert), "+cf", str(cert)])
    assert mutual.returncode == 0, mutual.output


async def test_a_stalled_tls_client_does_not_hold_up_others(make_gateway, server_cert):
    key, cert = server_cert
    gateway = await make_gateway(dicom_tls_cert=str(cert), dicom_tls_key=str(key))
    with socket.create_connection(("127.0.0.1", gateway.port)):  # connects, never says hello
        echo = await run(echoscu, gateway.port, calling=CHENGGUAN_CT, extra=["+tla", "+cf", str(cert)])
    assert echo.returncode == 0, echo.output
