"""C-GET of a large instance streams it from the blob store: the gateway's memory stays flat.

The gateway is a real ``yilian serve pacs_gateway`` process.  A ~160 MB uncompressed instance
is C-STOREd into it, the process is restarted (so its peak RSS, VmHWM, owes nothing to
ingest), and DCMTK getscu retrieves the instance: the peak grows by a few MB, not by the
instance's size, and the data set arrives byte for byte.  Asking for a syntax that needs a
conversion (implicit VR only) takes the decoding path, and the same measurement then sees
the whole instance in memory: the figure is sensitive, not vacuous.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests import dicom_samples as ds_
from tests.e2e.conftest import yilian_process  # noqa: F401 - the fixture: processes killed at teardown

pytestmark = pytest.mark.timeout(180)

GETSCU = "/usr/bin/getscu"
SIZE = 160 << 20
CONVERTED_SIZE = 48 << 20
MiB = 1 << 20
COUNTY_WS = "COUNTY_RWS1"  # county reading workstation: may retrieve every township's studies
CG = "CG_CT1"  # Chengguan township modality


def write_large_instance(path: Path, size: int) -> Path:
    """A multi-frame US instance of ``size`` bytes of Pixel Data that are not all alike, written in pieces."""
    ds = ds_.make_instance(rows=1024, columns=1024, sop_class_uid=ds_.US_MULTIFRAME, modality="US")
    ds.NumberOfFrames = size // (1024 * 1024)
    del ds.PixelData
    ds_.write(ds, path)
    piece = os.urandom(MiB)  # one random MiB, repeated: a shifted or dropped byte shows in the hash
    with open(path, "ab") as f:
        f.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<I", size))
        for _ in range(size // MiB):
            f.write(piece)
    return path


def data_set_digest(path: Path) -> str:
    """SHA-256 of a Part 10 file's data set (what follows its File Meta Information)."""
    with open(path, "rb") as f:
        head = f.read(144)
        assert head[128:132] == b"DICM"
        (group_length,) = struct.unpack("<I", head[140:144])
        f.seek(144 + group_length)
        h = hashlib.sha256()
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def getscu(port: int, study_uid: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True)
    return subprocess.run([GETSCU, "-v", "-S", "+B", *extra, "-aet", COUNTY_WS, "-aec", "YILIAN", "-od", str(out),
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                           "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"})


def test_c_get_streams_a_large_instance_and_memory_stays_flat(tmp_path, yilian_process):  # noqa: F811
    big = write_large_instance(tmp_path / "in" / "big.dcm", SIZE)
    # Another study, stored in Implicit VR: getscu takes Explicit VR only, so it must be converted.
    implicit = write_large_instance(tmp_path / "in" / "implicit.dcm", CONVERTED_SIZE)
    big_uid, implicit_uid = (dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in (big, implicit))
    gateway = yilian_process(tmp_path / "data", args=("serve", "pacs_gateway"))
    gateway.start()
    for path, propose in ((big, "-xe"), (implicit, "-xi")):
        stored = ds_.storescu(gateway.dicom_port, [path], calling=CG, extra=["-R", propose], timeout=120)
        assert stored.returncode == 0, stored.output
    assert gateway.terminate() == 0

    gateway.start()  # a fresh process: its peak so far is start-up only
    assert gateway.proc is not None
    before = peak_rss(gateway.proc.pid)
    got = getscu(gateway.dicom_port, big_uid, tmp_path / "get")
    assert got.returncode == 0, got.stdout + got.stderr
    streamed_growth = peak_rss(gateway.proc.pid) - before
    (received,) = (tmp_path / "get").iterdir()
    assert data_set_digest(received) == data_set_digest(big)  # byte for byte, as stored
    print(f"streamed C-GET of {SIZE // MiB} MiB: gateway peak RSS {before / MiB:.0f} MiB "
          f"+ {streamed_growth / MiB:.1f} MiB")
    assert streamed_growth < 32 * MiB, f"peak RSS grew {streamed_growth / MiB:.0f} MiB for {SIZE // MiB} MiB"

    converted = getscu(gateway.dicom_port, implicit_uid, tmp_path / "converted")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    converted_growth = peak_rss(gateway.proc.pid) - before
    print(f"converted C-GET of {CONVERTED_SIZE // MiB} MiB: gateway peak RSS + {converted_growth / MiB:.0f} MiB")
    assert converted_growth > CONVERTED_SIZE  # the measurement does see an instance read whole
    (received,) = (tmp_path / "converted").iterdir()
    assert dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert gateway.terminate() == 0
