"""Building and reading multipart/related bodies in tests, byte for byte."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.dicom_samples import chinese_instance, real_file, write

BOUNDARY = "yilian-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(parts: list[bytes], *, part_type: str = "application/dicom", boundary: str = BOUNDARY) -> bytes:
    body = b""
    for data in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers, content)."""
    boundary = next(p.split("=", 1)[1].strip('"') for p in (x.strip() for x in content_type.split(";"))
                    if p.lower().startswith("boundary="))
    delimiter = b"--" + boundary.encode()
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    assert first.startswith(delimiter), "body must start with the boundary"
    chunks[0] = first[len(delimiter):]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        head, _, content = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def sample_files(directory: Path) -> dict[str, Path]:
    """CT and MR (explicit VR LE), a GB18030 patient name, and JPEG 2000: the files the tests store."""
    gb = chinese_instance("GB18030", study_date="20261123", modality="DX", patient_id="GB001",
                          sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1", rows=16, columns=12)
    return {"ct": real_file("CT_small.dcm"), "mr": real_file("MR_small.dcm"),
            "gb18030": write(gb, directory / "gb18030.dcm"), "j2k": real_file("JPEG2000.dcm")}


def datasets(files: dict[str, Path]) -> dict[str, Dataset]:
    return {name: dcmread(path) for name, path in files.items()}
