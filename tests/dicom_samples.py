"""Helpers that build DICOM test datasets and drive DCMTK, shared by the gateway tests.

Everything here writes real Part 10 files with pydicom; nothing is mocked.  Charset
helpers encode text in the dataset's own Specific Character Set (GB18030, GBK, UTF-8),
so a test can check the raw bytes really are what a Chinese modality would send.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID,
                         generate_uid)

DCMTK = "/usr/bin"  # full paths: pynetdicom's own storescu/echoscu shadow DCMTK's in a venv
ECHOSCU = f"{DCMTK}/echoscu"
STORESCU = f"{DCMTK}/storescu"
FINDSCU = f"{DCMTK}/findscu"
GETSCU = f"{DCMTK}/getscu"
MOVESCU = f"{DCMTK}/movescu"

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
DX_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation
CR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1")
US_IMAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
US_MULTIFRAME = UID("1.2.840.10008.5.1.4.1.1.3.1")
SC_IMAGE = UID("1.2.840.10008.5.1.4.1.1.7")
TWELVE_LEAD_ECG = UID("1.2.840.10008.5.1.4.1.1.9.1.1")
GENERAL_ECG = UID("1.2.840.10008.5.1.4.1.1.9.1.2")
AMBULATORY_ECG = UID("1.2.840.10008.5.1.4.1.1.9.1.3")
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")

# pydicom's bundled real files, by what they exercise.
REAL_FILES = {
    "CT_small.dcm": "CT, explicit VR LE",
    "MR_small.dcm": "MR, explicit VR LE",
    "MR_small_implicit.dcm": "MR, implicit VR LE",
    "waveform_ecg.dcm": "12-lead ECG waveform",
    "test-SR.dcm": "SR",
    "JPEG2000.dcm": "JPEG 2000",
    "MR_small_RLE.dcm": "RLE lossless",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless",
    "SC_rgb_jpeg_dcmtk.dcm": "SC, JPEG baseline",
    "JPGExtended.dcm": "JPEG extended",
}

# Person names as a township modality would send them.
CHINESE_NAMES = {"GB18030": "张^三", "GBK": "李^四", "ISO_IR 192": "王^小明"}
PYTHON_CODEC = {"GB18030": "gb18030", "GBK": "gbk", "ISO_IR 192": "utf-8"}


def real_file(name: str) -> Path:
    """A real file from pydicom's test data (``CT_small.dcm``, ``waveform_ecg.dcm``, ...)."""
    return Path(get_testdata_file(name))


def real_file_copy(name: str, directory: Path) -> Path:
    """A real file with a fresh SOP Instance UID (pydicom's MR variants share one), pixel data untouched."""
    ds = dcmread(real_file(name))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information: the dataset as sent on the wire."""
    return dataset_part(Path(path).read_bytes())


def dataset_part(raw: bytes) -> bytes:
    """The bytes of a Part 10 file (or a bare dataset) after its File Meta Information."""
    if raw[128:132] != b"DICM":
        return raw
    # (0002,0000) File Meta Information Group Length: UL, value starts at 132 + 8.
    (group_length,) = struct.unpack("<I", raw[140:144])
    return raw[144 + group_length:]


def make_instance(*, study_uid: str | None = None, series_uid: str | None = None,
                  sop_instance_uid: str | None = None, sop_class_uid: str = CT_IMAGE, modality: str = "CT",
                  patient_id: str = "P001", patient_name: str = "TEST^PATIENT", charset: str | None = None,
                  instance_number: int = 1, series_number: int = 1, rows: int = 8, columns: int = 8,
                  number_of_frames: int | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
                  study_date: str = "20261123", accession_number: str = "ACC1",
                  study_description: str = "", pixel_value: int = 0, extra: dict | None = None) -> Dataset:
    """A small but complete image instance with File Meta, ready for :func:`write`; ``extra``: more
    attributes by keyword (e.g. ``{"AdmissionID": ...}``)."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession_number
    ds.StudyID = "1"
    ds.StudyDescription = study_description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    frames = number_of_frames or 1
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    ds.PixelData = bytes([pixel_value & 0xFF]) * (rows * columns * frames + (rows * columns * frames) % 2)
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.file_meta = file_meta(ds, transfer_syntax)
    return ds


def file_meta(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def write(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part 10 file in the transfer syntax of its File Meta."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return path


def chinese_instance(charset: str, **kw) -> Dataset:
    """An instance whose patient name is Chinese text encoded in ``charset``."""
    return make_instance(charset=charset, patient_name=kw.pop("patient_name", CHINESE_NAMES[charset]),
                         study_description=kw.pop("study_description", "胸部正位"), **kw)


def raw_patient_name(path: Path) -> bytes:
    """The undecoded bytes of (0010,0010) in a file, to prove what charset is on disk."""
    ds = dcmread(path, stop_before_pixels=True)
    return ds.get_item(0x00100010).value


@dataclass
class Study:
    study_uid: str
    files: list[Path]


def make_study(directory: Path, *, series: int = 1, instances: int = 2, modality: str = "CT",
               sop_class_uid: str = CT_IMAGE, patient_id: str = "P001", study_uid: str | None = None,
               **kw) -> Study:
    """A study of ``series`` × ``instances`` small instances written under ``directory``."""
    study_uid = study_uid or generate_uid()
    files = []
    for s in range(series):
        series_uid = generate_uid()
        for i in range(instances):
            ds = make_instance(study_uid=study_uid, series_uid=series_uid, sop_class_uid=sop_class_uid,
                               modality=modality, patient_id=patient_id, series_number=s + 1,
                               instance_number=i + 1, pixel_value=i, **kw)
            files.append(write(ds, Path(directory) / f"s{s}_i{i}_{ds.SOPInstanceUID}.dcm"))
    return Study(study_uid, files)


def write_large_multiframe(path: Path, size_bytes: int, *, rows: int = 1024, columns: int = 1024,
                           **kw) -> Path:
    """A multi-frame 8-bit instance of about ``size_bytes``, streamed to disk (never whole in memory).

    The header comes from pydicom; Pixel Data is written by hand in chunks, so the test
    process's own memory stays flat while building it.
    """
    frame = rows * columns
    frames = max(1, size_bytes // frame)
    ds = make_instance(rows=rows, columns=columns, sop_class_uid=kw.pop("sop_class_uid", US_MULTIFRAME),
                       modality=kw.pop("modality", "US"), **kw)
    ds.NumberOfFrames = frames
    del ds.PixelData
    path = write(ds, path)
    length = frame * frames
    chunk = b"\x00" * (1 << 20)
    with open(path, "ab") as f:
        # (7FE0,0010) OB, explicit VR LE: tag, VR, 2 reserved bytes, 4-byte length.
        f.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + struct.pack("<I", length + length % 2))
        left = length + length % 2
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return path


# DCMTK storescu proposes uncompressed syntaxes unless told otherwise; these options make it
# propose (and send, unconverted) the file's own transfer syntax.
PROPOSE_OPTION = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def transfer_syntax_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def propose_as_is(path: Path) -> list[str]:
    """storescu options that send ``path`` in its own transfer syntax (``-R``: only the classes needed)."""
    return ["-R", PROPOSE_OPTION[transfer_syntax_of(path)]]


@dataclass
class Result:
    returncode: int
    output: str


def _run(cmd: Sequence[str], timeout: float) -> Result:
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    return Result(proc.returncode, proc.stdout + proc.stderr)


def echoscu(port: int, *, calling: str, called: str = "YILIAN", extra: Sequence[str] = (),
            timeout: float = 30) -> Result:
    return _run([ECHOSCU, "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port)], timeout)


# A gateway answers a C-STORE once its journal record is durable and indexes it milliseconds
# later.  Tests read the index right after storescu returns, so storescu then waits for the
# in-process gateways to have indexed what they acknowledged (tests/conftest.py registers them).
AFTER_STORE: list[Callable[[], None]] = []


def storescu(port: int, files: Sequence[Path], *, calling: str, called: str = "YILIAN",
             extra: Sequence[str] = (), timeout: float = 60) -> Result:
    """DCMTK ``storescu`` with verbose output; ``-R`` proposes only the classes in ``files``."""
    result = _run([STORESCU, "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
                   *map(str, files)], timeout)
    for settle in list(AFTER_STORE):
        settle()
    return result


def start_storescp(port: int, directory: Path, *, ae_title: str = "STORESCP",
                   extra: Sequence[str] = ()) -> subprocess.Popen:
    """DCMTK ``storescp`` writing what it receives exactly as read (``+B``): the reference for bit-identity."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([f"{DCMTK}/storescp", "+B", "+xa", "-aet", ae_title, "-od", str(directory), *extra, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_storescu(port: int, files: Sequence[Path], *, calling: str, called: str = "YILIAN",
                   extra: Sequence[str] = ()) -> subprocess.Popen:
    """A background ``storescu`` (for concurrent associations)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.Popen([STORESCU, "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
                             *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


# --- hostile data sets (built byte by byte: pydicom would refuse to write most of them) -----------

def encoded(ds: Dataset) -> bytes:
    """``ds`` (no File Meta) encoded explicit VR little endian."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def write_part10(path: Path, ds: Dataset, data_set: bytes, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """A Part 10 file: preamble, File Meta Information for ``ds``'s UIDs, then ``data_set`` as given."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    meta = DicomBytesIO()
    write_file_meta_info(meta, file_meta(ds, transfer_syntax), enforce_standard=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + data_set)
    return path


def element(group: int, elem: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    """One explicit VR little endian element; ``length`` overrides the declared length."""
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", n) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", n) + value


UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def nested_sequences(depth: int) -> bytes:
    """(0040,A730) Content Sequence nested ``depth`` levels deep, undefined lengths throughout."""
    head = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", UNDEFINED_LENGTH) + ITEM
    return head * depth + (ITEM_END + SEQUENCE_END) * depth


def hostile_instance(kind: str, directory: Path, **kw) -> tuple[Dataset, Path]:
    """A small CT whose data set is broken in one way, as a Part 10 file:

    ``pixel_data_past_end`` (Pixel Data declares more bytes than follow), ``element_past_end``
    (a trailing element whose length runs past the end), ``unclosed_sequence`` (an
    undefined-length sequence never closed), ``nested_<n>`` (sequences nested n deep),
    ``deflate_bomb_<MB>`` (deflated, inflating to about that many MB of zero pixels).
    """
    import zlib
    ds = make_instance(**kw)
    pixels = ds.PixelData
    del ds.PixelData
    header = encoded(ds)
    pixel = element(0x7FE0, 0x0010, b"OB", pixels)
    syntax = ExplicitVRLittleEndian
    if kind == "pixel_data_past_end":
        body = header + element(0x7FE0, 0x0010, b"OB", pixels, length=len(pixels) + 4096)
    elif kind == "element_past_end":
        body = header + pixel + element(0x7FE1, 0x0010, b"OB", b"\0" * 16, length=1 << 20)
    elif kind == "unclosed_sequence":
        seq = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", UNDEFINED_LENGTH) + ITEM
        body = header + seq + element(0x0040, 0xA040, b"CS", b"TEXT")  # no item or sequence delimiter
    elif kind.startswith("nested_"):
        body = header + nested_sequences(int(kind.removeprefix("nested_"))) + pixel
    elif kind.startswith("deflate_bomb_"):
        size = int(kind.removeprefix("deflate_bomb_")) << 20
        ds.Rows, ds.Columns = 1024, 1024
        ds.NumberOfFrames = size // (1024 * 1024)
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        zeros = b"\0" * (1 << 20)
        parts = [compressor.compress(encoded(ds)),
                 compressor.compress(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", size))]
        parts += [compressor.compress(zeros) for _ in range(size >> 20)]
        body = b"".join(parts) + compressor.flush()
        body += b"\0" * (len(body) % 2)
        syntax = "1.2.840.10008.1.2.1.99"
    else:
        raise ValueError(kind)
    return ds, write_part10(Path(directory) / f"{kind}.dcm", ds, body, syntax)
