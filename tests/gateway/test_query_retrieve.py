"""C-FIND, C-GET and C-MOVE against the gateway, driven by DCMTK and Orthanc.

DCMTK's findscu, getscu and movescu (full Debian paths) are the clients; movescu's
destinations are a DCMTK storescp and an Orthanc the test starts on free ports and
registers in the test consortium as organisations' ``scp``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests import dicom_samples as ds_
from tests.support import EXAMPLE_CONSORTIUM, free_port, wait_for

from services.core.consortium import parse_consortium

from .conftest import Gateway
from .conftest import run as in_thread

pytestmark = pytest.mark.timeout(120)

FINDSCU, GETSCU, MOVESCU, STORESCP = "/usr/bin/findscu", "/usr/bin/getscu", "/usr/bin/movescu", "/usr/bin/storescp"
COUNTY_WS = "COUNTY_RWS1"  # county hospital workstation: sees the whole county
CG = "CG_CT1"  # Chengguan township modality
DB = "DB_DR1"  # Dongba township modality (its village: Zhangzhuang)
ZZ = "ZZ_ECG1"  # Zhangzhuang village clinic (under Dongba)


async def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, errors="replace",
                                   timeout=timeout, env=env)


async def findscu(gw: Gateway, out: Path, keys: list[str], *, calling: str = COUNTY_WS, model: str = "-S",
                  query_file: Path | None = None, verbosity: str = "-v") -> list[Dataset]:
    """Run findscu, extracting every response identifier (-X); return them."""
    out.mkdir(parents=True, exist_ok=True)
    args = [FINDSCU, verbosity, model, "-aet", calling, "-aec", gw.ae_title, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    args += ["127.0.0.1", str(gw.port)]
    if query_file is not None:
        args.append(str(query_file))
    result = await run(args)
    gw.last_output = result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def moved_consortium(gateway: Gateway, scp_ports: dict[str, int]) -> None:
    """Point organisations' registered SCPs (C-MOVE destinations) at the test's own peers."""
    data = yaml.safe_load(EXAMPLE_CONSORTIUM.read_text("utf-8"))
    for org in data["organizations"]:
        if org.get("scp") and org["scp"]["ae_title"] in scp_ports:
            org["scp"]["port"] = scp_ports[org["scp"]["ae_title"]]
    gateway.rt.consortium = parse_consortium(yaml.safe_dump(data, allow_unicode=True))


async def store(gateway: Gateway, calling: str, files: list[Path], *propose: str) -> None:
    result = await in_thread(ds_.storescu, gateway.port, files, calling=calling, extra=["-R", *propose])
    assert result.returncode == 0, result.output


@pytest.fixture
async def gw(gateway):
    gateway.last_output = ""
    return gateway


@pytest.fixture
async def county(tmp_path, gw):
    """Three studies C-STOREd by three organisations; Chinese names in GB18030 and UTF-8."""
    d = tmp_path / "in"
    cg = ds_.make_study(d / "cg", series=2, instances=2, patient_id="CG001", patient_name="Zhang^San",
                        study_date="20240115", accession_number="CGACC1", study_description="CT CHEST")
    db = [ds_.write(ds_.chinese_instance("GB18030", study_uid=(db_uid := generate_uid()), series_uid=generate_uid(),
                                         patient_id="DB001", study_date="20240301", modality="DX",
                                         sop_class_uid=ds_.DX_IMAGE, accession_number="DBACC1"),
                    d / "db" / "1.dcm")]
    zz = [ds_.write(ds_.chinese_instance("ISO_IR 192", patient_name="张^小红", patient_id="ZZ001",
                                         study_date="20231231", modality="US", sop_class_uid=ds_.US_IMAGE,
                                         accession_number="ZZACC1"), d / "zz" / "1.dcm")]
    assert ds_.raw_patient_name(db[0]).rstrip(b" ") == "张^三".encode("gb18030")
    await store(gw, CG, cg.files)
    await store(gw, DB, db)
    await store(gw, ZZ, zz)
    zz_uid = dcmread(zz[0]).StudyInstanceUID
    return {"cg": cg.study_uid, "db": db_uid, "zz": zz_uid, "cg_files": cg.files, "db_files": db,
            "zz_files": zz}


# --- C-FIND -------------------------------------------------------------------------------

async def test_study_level_find_returns_requested_attributes(gw, county, tmp_path):
    rsp = await findscu(gw, tmp_path / "f", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['cg']}",
                                            "PatientName", "PatientID", "StudyDate", "StudyTime",
                                            "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
                                            "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                                            "PatientBirthDate", "PatientSex", "StudyID",
                                            "ReferringPhysicianName", "RetrieveAETitle"])
    assert len(rsp) == 1, gw.last_output
    r = rsp[0]
    assert r.StudyInstanceUID == county["cg"] and r.QueryRetrieveLevel == "STUDY"
    assert str(r.PatientName) == "Zhang^San" and r.PatientID == "CG001"
    assert r.StudyDate == "20240115" and r.AccessionNumber == "CGACC1" and r.StudyDescription == "CT CHEST"
    assert r.ModalitiesInStudy == "CT"
    assert int(r.NumberOfStudyRelatedSeries) == 2 and int(r.NumberOfStudyRelatedInstances) == 4
    assert r.PatientBirthDate == "19600101" and r.PatientSex == "M" and r.RetrieveAETitle == gw.ae_title
    assert "ReferringPhysicianName" in r and "SpecificCharacterSet" not in r  # all ASCII


async def test_scope_follows_the_consortium_tree(gw, county, tmp_path):
    async def studies(calling: str) -> set[str]:
        rsp = await findscu(gw, tmp_path / calling, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
                            calling=calling)
        return {r.StudyInstanceUID for r in rsp}

    assert await studies(COUNTY_WS) == {county["cg"], county["db"], county["zz"]}
    assert await studies(DB) == {county["db"], county["zz"]}  # its own and its village's
    assert await studies(CG) == {county["cg"]}  # another township's studies are invisible
    assert await studies(ZZ) == {county["zz"]}
    assert await studies("CITY_RWS1") == {county["cg"], county["db"], county["zz"]}


async def test_wildcards_case_insensitive_names_and_date_ranges(gw, county, tmp_path):
    async def uids(*keys: str) -> set[str]:
        out = tmp_path / f"q{len(list(tmp_path.glob('q*')))}"
        return {r.StudyInstanceUID for r in await findscu(gw, out, ["QueryRetrieveLevel=STUDY",
                                                                     "StudyInstanceUID", *keys])}

    assert await uids("PatientName=zhang*") == {county["cg"]}
    assert await uids("PatientName=ZHANG^SAN") == {county["cg"]}
    assert await uids("PatientName=zh?ng*") == {county["cg"]}
    assert await uids("AccessionNumber=*ACC1") == {county["cg"], county["db"], county["zz"]}
    assert await uids("StudyDate=20240101-20240131") == {county["cg"]}
    assert await uids("StudyDate=20240101-") == {county["cg"], county["db"]}
    assert await uids("StudyDate=-20231231") == {county["zz"]}
    assert await uids("ModalitiesInStudy=DX\\US") == {county["db"], county["zz"]}
    assert await uids(f"StudyInstanceUID={county['cg']}\\{county['zz']}") == {county["cg"], county["zz"]}
    assert await uids("PatientID=NOBODY") == set()


async def test_chinese_names_stored_in_gb18030_and_utf8_are_found_in_utf8(gw, county, tmp_path):
    rsp = await findscu(gw, tmp_path / "f", ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192",
                                            "PatientName=张*", "StudyInstanceUID", "StudyDescription"])
    assert {r.StudyInstanceUID for r in rsp} == {county["db"], county["zz"]}, gw.last_output
    for r in rsp:
        assert r.SpecificCharacterSet == "ISO_IR 192"
        assert r.StudyDescription == "胸部正位"
    names = {str(r.PatientName) for r in rsp}
    assert names == {"张^三", "张^小红"}
    raw = {r.get_item(0x00100010).value.rstrip(b" ") for r in [dcmread(p) for p in sorted((tmp_path / "f").glob("rsp*"))]}
    assert "张^三".encode("utf-8") in raw  # sent as UTF-8 on the wire


async def test_query_encoded_in_gb18030_matches(gw, county, tmp_path):
    query = Dataset()
    query.SpecificCharacterSet = "GB18030"
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "张^三"
    query.StudyInstanceUID = ""
    path = tmp_path / "query.dcm"
    query.save_as(path, implicit_vr=True, little_endian=True)
    assert "张^三".encode("gb18030") in path.read_bytes()
    rsp = await findscu(gw, tmp_path / "f", [], query_file=path)
    assert [r.StudyInstanceUID for r in rsp] == [county["db"]], gw.last_output
    assert str(rsp[0].PatientName) == "张^三"



async def test_gbk_name_found_by_gbk_and_utf8_queries(gw, tmp_path):
    path = ds_.write(ds_.chinese_instance("GBK", patient_id="CG002"), tmp_path / "gbk.dcm")
    assert ds_.raw_patient_name(path).rstrip(b" ") == "李^四".encode("gbk")
    await store(gw, CG, [path])
    query = Dataset()
    query.SpecificCharacterSet = "GBK"
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "李*"
    query.PatientID = ""
    qfile = tmp_path / "gbk-query.dcm"
    query.save_as(qfile, implicit_vr=True, little_endian=True)
    by_gbk = await findscu(gw, tmp_path / "g", [], query_file=qfile)
    by_utf8 = await findscu(gw, tmp_path / "u", ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192",
                                                "PatientName=李^四", "PatientID"])
    for rsp in (by_gbk, by_utf8):
        assert [(r.PatientID, str(r.PatientName), r.SpecificCharacterSet) for r in rsp] == \
            [("CG002", "李^四", "ISO_IR 192")], gw.last_output

async def test_patient_series_and_image_levels(gw, county, tmp_path):
    pat = await findscu(gw, tmp_path / "p", ["QueryRetrieveLevel=PATIENT", "PatientID=CG001", "PatientName",
                                            "NumberOfPatientRelatedStudies",
                                            "NumberOfPatientRelatedInstances"], model="-P")
    assert len(pat) == 1, gw.last_output
    assert str(pat[0].PatientName) == "Zhang^San"
    assert int(pat[0].NumberOfPatientRelatedStudies) == 1 and int(pat[0].NumberOfPatientRelatedInstances) == 4

    study = await findscu(gw, tmp_path / "ps", ["QueryRetrieveLevel=STUDY", "PatientID=CG001",
                                               "StudyInstanceUID"], model="-P")
    assert [r.StudyInstanceUID for r in study] == [county["cg"]]

    series = await findscu(gw, tmp_path / "s", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={county['cg']}",
                                               "SeriesInstanceUID", "Modality", "SeriesNumber",
                                               "NumberOfSeriesRelatedInstances", "PatientName"])
    assert sorted(int(r.SeriesNumber) for r in series) == [1, 2], gw.last_output
    assert all(r.Modality == "CT" and int(r.NumberOfSeriesRelatedInstances) == 2 for r in series)
    assert all(str(r.PatientName) == "Zhang^San" for r in series)

    first = next(r for r in series if int(r.SeriesNumber) == 1).SeriesInstanceUID
    images = await findscu(gw, tmp_path / "i", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={county['cg']}",
                                               f"SeriesInstanceUID={first}", "SOPInstanceUID", "SOPClassUID",
                                               "InstanceNumber"])
    assert sorted(int(r.InstanceNumber) for r in images) == [1, 2]
    assert all(r.SOPClassUID == ds_.CT_IMAGE for r in images)
    sent = {dcmread(f).SOPInstanceUID for f in county["cg_files"] if dcmread(f).SeriesInstanceUID == first}
    assert {r.SOPInstanceUID for r in images} == sent

    # Patient Root image level needs the patient's and the study's unique keys.
    patient_root = await findscu(gw, tmp_path / "pi", ["QueryRetrieveLevel=IMAGE", "PatientID=CG001",
                                                      f"StudyInstanceUID={county['cg']}",
                                                      f"SeriesInstanceUID={first}", "SOPInstanceUID"], model="-P")
    assert {r.SOPInstanceUID for r in patient_root} == sent


async def test_bad_identifiers_get_failure_statuses_with_comments(gw, county, tmp_path):
    assert await findscu(gw, tmp_path / "a", ["QueryRetrieveLevel=SERIES", "SeriesInstanceUID"],
                         verbosity="-d") == []
    assert "0xa900" in gw.last_output.lower() and "StudyInstanceUID required at STUDY level" in gw.last_output
    await findscu(gw, tmp_path / "b", ["QueryRetrieveLevel=PATIENT", "PatientID"], verbosity="-d")
    assert "0xa900" in gw.last_output.lower() and "not in the Study Root model" in gw.last_output
    await findscu(gw, tmp_path / "c", ["QueryRetrieveLevel=STUDY", "StudyDate=20240301-20240101"],
                  verbosity="-d")
    assert "0xc000" in gw.last_output.lower() and "StudyDate: empty range" in gw.last_output
    # The gateway is still fine afterwards.
    assert len(await findscu(gw, tmp_path / "d", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])) == 3



async def test_cancel_stops_a_long_answer(gw, tmp_path, monkeypatch):
    study = ds_.make_study(tmp_path / "many", series=1, instances=200, patient_id="CG009")
    await store(gw, CG, study.files)
    series_uid = dcmread(study.files[0]).SeriesInstanceUID
    keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study.study_uid}", f"SeriesInstanceUID={series_uid}",
            "SOPInstanceUID"]
    everything = await findscu(gw, tmp_path / "all", keys)
    assert len(everything) == 200
    out = tmp_path / "cancelled"
    out.mkdir()
    # Make the answer really long (5 ms a match), or the gateway may legitimately finish all 200
    # matches before findscu's C-CANCEL arrives and answer Success, which the standard allows.
    import services.pacs_gateway.query as query_module
    build = query_module.response_identifier

    def slow_response_identifier(*args, **kwargs):
        time.sleep(0.005)  # runs on pynetdicom's association thread, not the event loop
        return build(*args, **kwargs)
    monkeypatch.setattr(query_module, "response_identifier", slow_response_identifier)
    result = await run([FINDSCU, "-d", "-S", "-aet", COUNTY_WS, "-aec", gw.ae_title, "--cancel", "1", "-X", "-od",
                        str(out), *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(gw.port)])
    log = result.stdout + result.stderr
    assert final_status(log) == "0xfe00", log[-2000:]  # Matching terminated due to Cancel request
    assert len(list(out.glob("rsp*.dcm"))) < 200


# --- C-GET --------------------------------------------------------------------------------

async def getscu(gw: Gateway, out: Path, keys: list[str], *, calling: str = COUNTY_WS, model: str = "-S",
                 extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    args = [GETSCU, "-d", model, "-aet", calling, "-aec", gw.ae_title, "-od", str(out), "+B", *extra]
    for k in keys:
        args += ["-k", k]
    return await run([*args, "127.0.0.1", str(gw.port)])


def dimse_values(out: str, field: str) -> list[str]:
    """Values of a field in DCMTK's -d dumps of incoming responses (e.g. "Remaining Suboperations")."""
    return re.findall(rf"{field}\s*:\s*(\S+)", out)


def final_status(out: str) -> str:
    statuses = dimse_values(out, "DIMSE Status")
    return statuses[-1].rstrip(":").lower() if statuses else ""


def received(directory: Path) -> dict[str, Path]:
    """Files a peer wrote, by SOP Instance UID."""
    files = [p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}


def by_uid(files: list[Path]) -> dict[str, Path]:
    return {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in files}


async def test_c_get_study_returns_every_instance_bit_for_bit(gw, county, tmp_path):
    result = await getscu(gw, tmp_path / "get", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['cg']}"])
    got = received(tmp_path / "get")
    sent = by_uid(county["cg_files"])
    assert set(got) == set(sent), result.stdout + result.stderr
    for uid, path in sent.items():
        assert ds_.dataset_bytes(got[uid]) == ds_.dataset_bytes(path)
    out = result.stdout + result.stderr
    assert dimse_values(out, "Remaining Suboperations")[:4] == ["3", "2", "1", "0"]  # Pending counts down
    assert dimse_values(out, "Completed Suboperations")[-1] == "4" and final_status(out) == "0x0000"


async def test_c_get_series_and_image_level_and_scope(gw, county, tmp_path):
    first = dcmread(county["cg_files"][0])
    await getscu(gw, tmp_path / "series", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={county['cg']}",
                                           f"SeriesInstanceUID={first.SeriesInstanceUID}"])
    assert set(received(tmp_path / "series")) == {dcmread(p).SOPInstanceUID for p in county["cg_files"]
                                                  if dcmread(p).SeriesInstanceUID == first.SeriesInstanceUID}
    await getscu(gw, tmp_path / "image", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={county['cg']}",
                                          f"SeriesInstanceUID={first.SeriesInstanceUID}",
                                          f"SOPInstanceUID={first.SOPInstanceUID}"])
    assert set(received(tmp_path / "image")) == {first.SOPInstanceUID}
    # Patient Root, PATIENT level: everything of the patient.
    await getscu(gw, tmp_path / "patient", ["QueryRetrieveLevel=PATIENT", "PatientID=DB001"], model="-P")
    assert set(received(tmp_path / "patient")) == set(by_uid(county["db_files"]))
    # Chengguan township cannot pull Dongba's study: nothing matches, nothing is sent.
    result = await getscu(gw, tmp_path / "other", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['db']}"],
                          calling=CG)
    assert received(tmp_path / "other") == {}
    assert final_status(result.stdout + result.stderr) == "0x0000"


async def test_c_get_without_unique_key_is_refused(gw, county, tmp_path):
    result = await getscu(gw, tmp_path / "bad", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={county['cg']}"])
    out = result.stdout + result.stderr
    assert received(tmp_path / "bad") == {}
    assert "0xa900" in out.lower() and "SeriesInstanceUID required at SERIES level" in out


async def test_c_get_transfer_syntax_the_requestor_did_not_propose(gw, tmp_path, caplog):
    jpeg = ds_.real_file("SC_rgb_jpeg_dcmtk.dcm")  # JPEG baseline: pydicom + Pillow can decode it
    jls = ds_.real_file("MR_small_jpeg_ls_lossless.dcm")  # JPEG-LS: no decoder installed here
    await store(gw, CG, [jpeg], "-xy")
    await store(gw, CG, [jls], "-xt")
    jpeg_ds, jls_ds = dcmread(jpeg), dcmread(jls)
    study_keys = [f"StudyInstanceUID={jpeg_ds.StudyInstanceUID}\\{jls_ds.StudyInstanceUID}"]

    # Proposing JPEG baseline: it comes back as stored, bit for bit.
    await getscu(gw, tmp_path / "jpeg", ["QueryRetrieveLevel=STUDY", *study_keys], extra=("+xy",))
    got = received(tmp_path / "jpeg")
    assert ds_.dataset_bytes(got[jpeg_ds.SOPInstanceUID]) == ds_.dataset_bytes(jpeg)

    # Uncompressed only: JPEG is decompressed; JPEG-LS cannot be, so it fails with a warning.
    result = await getscu(gw, tmp_path / "plain", ["QueryRetrieveLevel=STUDY", *study_keys])
    out = result.stdout + result.stderr
    got = received(tmp_path / "plain")
    assert set(got) == {jpeg_ds.SOPInstanceUID}, out
    plain = dcmread(got[jpeg_ds.SOPInstanceUID])
    assert not plain.file_meta.TransferSyntaxUID.is_compressed
    assert plain.pixel_array.shape == jpeg_ds.pixel_array.shape
    assert dimse_values(out, "Failed Suboperations")[-1] == "1" and final_status(out) == "0xb000"
    # The final Warning carries the Failed SOP Instance UID List (getscu does not read it and
    # complains at release; the standard puts it there).
    assert dimse_values(out, "Data Set")[-1] == "present"
    refused = [r for r in caplog.records if r.getMessage() == "cannot decompress for peer; sub-operation fails"]
    assert [r.sop_instance_uid for r in refused] == [jls_ds.SOPInstanceUID]



def get_and_cancel_after_first(port: int, study_uid: str) -> tuple[list[str], Dataset]:
    """A pynetdicom C-GET SCU that sends C-CANCEL as soon as the first instance arrives."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

    stored: list[str] = []

    def on_store(event):
        stored.append(event.request.AffectedSOPInstanceUID)
        if len(stored) == 1:
            get_cx = next(cx for cx in event.assoc.accepted_contexts
                          if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
            event.assoc.send_c_cancel(1, get_cx.context_id)
        return 0x0000

    ae = AE("COUNTY_RWS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN", ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses = [status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet,
                                                           msg_id=1)]
    assoc.release()
    return stored, statuses[-1]


async def test_c_get_cancel_stops_sub_operations(gw, tmp_path):
    study = ds_.make_study(tmp_path / "five", series=1, instances=5, patient_id="CG003")
    await store(gw, CG, study.files)
    stored, final = await asyncio.to_thread(get_and_cancel_after_first, gw.port, study.study_uid)
    assert final.Status == 0xFE00
    assert len(stored) == 1 and final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfRemainingSuboperations == 4

# --- C-MOVE -------------------------------------------------------------------------------

async def wait_listening(port: int, what: str, proc: subprocess.Popen | None = None) -> None:
    import socket

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what} exited: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    await wait_for(up, timeout=20, what=what)


@pytest.fixture
async def storescp(tmp_path):
    port, out = free_port(), tmp_path / "storescp"
    out.mkdir()
    proc = subprocess.Popen([STORESCP, "-aet", "CG_TERM", "-od", str(out), "+B", "+xa", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    await wait_listening(port, "storescp", proc)
    yield port, out
    proc.terminate()
    proc.wait(10)


async def movescu(gw: Gateway, destination: str, keys: list[str], *, calling: str = COUNTY_WS,
                  model: str = "-S") -> str:
    args = [MOVESCU, "-d", model, "-aet", calling, "-aec", gw.ae_title, "-aem", destination]
    for k in keys:
        args += ["-k", k]
    result = await run([*args, "127.0.0.1", str(gw.port)])
    return result.stdout + result.stderr


async def test_c_move_to_a_registered_storescp(gw, county, tmp_path, storescp):
    port, out = storescp
    moved_consortium(gw, {"CG_TERM": port})
    log = await movescu(gw, "CG_TERM", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['cg']}\\{county['zz']}"])
    assert final_status(log) == "0x0000", log
    assert dimse_values(log, "Completed Suboperations")[-1] == "5"
    got = received(out)
    sent = by_uid(county["cg_files"] + county["zz_files"])
    assert set(got) == set(sent)
    for uid, path in sent.items():
        assert ds_.dataset_bytes(got[uid]) == ds_.dataset_bytes(path)


async def test_c_move_to_unknown_destination_and_out_of_scope(gw, county, tmp_path, storescp):
    port, out = storescp
    moved_consortium(gw, {"CG_TERM": port})
    log = await movescu(gw, "NOWHERE", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['cg']}"])
    assert final_status(log) == "0xa801"
    # Dongba's modality moves Chengguan's study: it is invisible to Dongba, nothing is sent.
    log = await movescu(gw, "CG_TERM", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['cg']}"],
                        calling=DB)
    assert final_status(log) == "0x0000" and dimse_values(log, "Completed Suboperations")[-1] == "0"
    assert received(out) == {}


@pytest.fixture
async def orthanc(tmp_path):
    dicom, http = free_port(), free_port()
    root = tmp_path / "orthanc"
    root.mkdir()
    config = {"Name": "yilian-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
              "DicomAet": "COUNTY_PACS", "DicomPort": dicom, "HttpPort": http, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [],
              "DicomServerEnabled": True, "HttpServerEnabled": True, "ConcurrentJobs": 1}
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["/usr/sbin/Orthanc", str(root / "orthanc.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    await wait_listening(http, "Orthanc HTTP", proc)
    await wait_listening(dicom, "Orthanc DICOM", proc)
    yield dicom, f"http://127.0.0.1:{http}"
    proc.kill()  # Orthanc takes ~3.5 s to stop on SIGTERM; its storage is thrown away
    proc.wait(20)


def orthanc_instances(base: str) -> set[str]:
    with urllib.request.urlopen(f"{base}/instances?expand", timeout=10) as rsp:
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in json.load(rsp)}


async def test_c_move_to_orthanc(gw, county, tmp_path, orthanc):
    port, base = orthanc
    moved_consortium(gw, {"COUNTY_PACS": port})
    log = await movescu(gw, "COUNTY_PACS", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={county['db']}"],
                        calling=COUNTY_WS)
    assert final_status(log) == "0x0000", log
    expected = set(by_uid(county["db_files"]))
    await wait_for(lambda: asyncio.to_thread(orthanc_instances, base), timeout=10, what="Orthanc instances")
    assert await asyncio.to_thread(orthanc_instances, base) == expected
    # The Chinese name arrived intact (GB18030 as sent by the township).
    with urllib.request.urlopen(f"{base}/patients?expand", timeout=10) as rsp:
        names = {p["MainDicomTags"].get("PatientName") for p in json.load(rsp)}
    assert names == {"张^三"}
