"""The asyncio DICOM upper layer (services/pacs_gateway/ul): who serves which association, and bad peers.

DCMTK and pynetdicom as requestors; a raw socket where a test must send what no toolkit
would (garbage PDUs, silence, a tiny maximum PDU length).
"""

from __future__ import annotations

import asyncio
import logging
import struct

from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from services.pacs_gateway.ul import dimse, pdu

from ..dicom_samples import echoscu, make_study, storescu
from ..support import wait_for
from .conftest import CHENGGUAN_CT, run

UL = "yilian.pacs_gateway.ul"


def paths(caplog) -> list[str]:
    return [r.path for r in caplog.records if r.name == UL and hasattr(r, "path")
            and r.getMessage() in ("association accepted", "association handed to pynetdicom")]


async def test_dcmtk_echo_and_store_are_served_natively(gateway, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=UL)
    assert (await run(echoscu, gateway.port, calling=CHENGGUAN_CT)).returncode == 0
    study = make_study(tmp_path, instances=3)
    result = await run(storescu, gateway.port, study.files, calling=CHENGGUAN_CT)
    assert result.returncode == 0, result.output
    assert await gateway.count("instances") == 3
    assert paths(caplog) == ["native", "native"]
    assert {r.peer.split(":")[0] for r in caplog.records if r.name == UL and hasattr(r, "peer")} == {"127.0.0.1"}
    # the kept file is the Part 10 file the sender's data set became, nothing left in staging
    assert len(gateway.blob_files()) == 3 and gateway.staging_files() == []


def _pynetdicom_store(port: int, files, *, find: bool = False, max_pdu: int = 16382) -> tuple[list[int], int | None]:
    ae = AE(ae_title=CHENGGUAN_CT)
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    if find:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        matches = None
        if find:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            responses = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            matches = sum(1 for status, _ in responses if status and status.Status in (0xFF00, 0xFF01))
        assoc.release()
        return statuses, matches
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


async def test_pynetdicom_requestor_with_a_small_pdu_is_served_natively(gateway, tmp_path, caplog):
    # pynetdicom fragments differently from DCMTK: a command PDU, then data PDVs of max_pdu - 6 bytes.
    caplog.set_level(logging.DEBUG, logger=UL)
    study = make_study(tmp_path, instances=2)
    statuses, _ = await run(_pynetdicom_store, gateway.port, study.files, max_pdu=4096)
    assert statuses == [0, 0]
    assert await gateway.count("instances") == 2
    assert paths(caplog) == ["native"]


async def test_storage_and_query_contexts_together_are_handed_to_pynetdicom(gateway, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=UL)
    study = make_study(tmp_path, instances=2)
    statuses, matches = await run(_pynetdicom_store, gateway.port, study.files, find=True)
    assert statuses == [0, 0] and matches == 1
    assert await gateway.count("instances") == 2
    assert paths(caplog) == ["pynetdicom"]
    handed = [r for r in caplog.records if r.getMessage() == "association handed to pynetdicom"]
    assert handed[0].peer.startswith("127.0.0.1:") and handed[0].calling_ae == CHENGGUAN_CT
    # and the native path still serves the next storage-only association
    more = make_study(tmp_path / "more", instances=1)
    assert (await run(storescu, gateway.port, more.files, calling=CHENGGUAN_CT)).returncode == 0
    assert paths(caplog) == ["pynetdicom", "native"]


# --- raw sockets ----------------------------------------------------------------------------
def associate_rq(*, calling: str = CHENGGUAN_CT, max_pdu: int = 16382, abstract: str = Verification) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, "YILIAN"
    cx = build_context(abstract, ["1.2.840.10008.1.2"])
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    primitive.user_information = [length]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return rq.encode()


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(6), 10)
    pdu_type, length = struct.unpack(">BxI", header)
    return pdu_type, await asyncio.wait_for(reader.readexactly(length), 10)


async def test_unrecognised_pdu_is_aborted_with_the_reason(gateway, caplog):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"\x09\x00\x00\x00\x00\x02\x00\x00")
    pdu_type, body = await read_pdu(reader)
    assert pdu_type == pdu.A_ABORT and body[2:] == bytes((pdu.ABORT_SOURCE_PROVIDER, pdu.REASON_UNRECOGNIZED_PDU))
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection is closed
    writer.close()
    errors = [r for r in caplog.records if r.getMessage() == "association aborted: protocol error"]
    assert errors and errors[0].peer.startswith("127.0.0.1:")


async def test_bad_pdv_length_after_association_is_aborted(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(associate_rq())
    assert (await read_pdu(reader))[0] == pdu.A_ASSOCIATE_AC
    writer.write(struct.pack(">BxI", pdu.P_DATA_TF, 8) + struct.pack(">IBB", 500, 1, 3) + b"xx")
    pdu_type, body = await read_pdu(reader)
    assert pdu_type == pdu.A_ABORT and body[3] == pdu.REASON_INVALID_PDU_PARAMETER_VALUE
    writer.close()


async def test_echo_response_is_fragmented_to_the_peers_maximum_pdu(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(associate_rq(max_pdu=40))
    assert (await read_pdu(reader))[0] == pdu.A_ASSOCIATE_AC
    echo = (struct.pack("<HHI", 0, 0x0002, 18) + b"1.2.840.10008.1.1\x00" + struct.pack("<HHIH", 0, 0x0100, 2, 0x0030)
            + struct.pack("<HHIH", 0, 0x0110, 2, 7) + struct.pack("<HHIH", 0, 0x0800, 2, 0x0101))
    writer.write(pdu.p_data_tf(1, echo, command=True, max_pdu=0))
    response, pdus = bytearray(), 0
    while True:
        pdu_type, body = await read_pdu(reader)
        assert pdu_type == pdu.P_DATA_TF and len(body) <= 40
        pdus += 1
        for context_id, control, data in pdu.pdvs(body):
            assert context_id == 1 and control & pdu.COMMAND
            response += data
        if control & pdu.LAST:
            break
    assert pdus > 1
    command = dimse.decode(bytes(response))
    assert command.field == dimse.C_ECHO_RSP and not command.has_data_set
    assert struct.pack("<HHIH", 0, 0x0120, 2, 7) in response and struct.pack("<HHIH", 0, 0x0900, 2, 0) in response
    writer.write(struct.pack(">BxI", pdu.A_RELEASE_RQ, 4) + b"\x00" * 4)
    assert (await read_pdu(reader))[0] == pdu.A_RELEASE_RP
    writer.close()


async def test_silent_client_is_dropped_after_the_network_timeout(make_gateway):
    gw = await make_gateway(dicom_network_timeout=0.5)
    native = gw.service._native
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    await wait_for(lambda: native.active == 1, timeout=10)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the gateway, nothing sent
    await wait_for(lambda: native.active == 0, timeout=10)
    writer.close()
    # silent after associating: A-ABORT, then closed
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(associate_rq())
    assert (await read_pdu(reader))[0] == pdu.A_ASSOCIATE_AC
    assert (await read_pdu(reader))[0] == pdu.A_ABORT
    assert await asyncio.wait_for(reader.read(), 10) == b""
    await wait_for(lambda: native.active == 0, timeout=10)
    writer.close()


async def test_instance_over_the_limit_is_refused_without_keeping_it(make_gateway, tmp_path):
    gw = await make_gateway(max_instance_bytes=4_000)
    study = make_study(tmp_path, instances=1, rows=64, columns=64)  # 8 kB of pixels
    statuses, _ = await run(_pynetdicom_store, gw.port, study.files)
    assert statuses == [0xA700]
    assert await gw.count("instances") == 0 and gw.blob_files() == [] and gw.staging_files() == []


def test_p_data_tf_fragments_within_the_maximum_and_marks_the_last():
    message = bytes(range(100))
    encoded = pdu.p_data_tf(3, message, command=False, max_pdu=36)
    out, offset, controls = bytearray(), 0, []
    while offset < len(encoded):
        pdu_type, length = struct.unpack_from(">BxI", encoded, offset)
        assert pdu_type == pdu.P_DATA_TF and length <= 36
        for context_id, control, data in pdu.pdvs(encoded[offset + 6:offset + 6 + length]):
            out += data
            controls.append(control)
        offset += 6 + length
    assert bytes(out) == message and controls[-1] == pdu.LAST and all(c == 0 for c in controls[:-1])


def test_store_response_command_set():
    raw = dimse.response(dimse.C_STORE_RSP, responding_to=9, sop_class_uid=CTImageStorage,
                         sop_instance_uid="1.2.3", status=0xA700, comment="too big")
    group_length = struct.unpack_from("<I", raw, 8)[0]
    assert group_length == len(raw) - 12
    command = dimse.decode(raw)
    assert command.field == dimse.C_STORE_RSP
    assert (command.sop_class_uid, command.sop_instance_uid) == (CTImageStorage, "1.2.3")
    assert b"too big " in raw and struct.pack("<HHIH", 0, 0x0900, 2, 0xA700) in raw


def test_file_meta_is_the_one_pynetdicom_writes():
    import io

    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import create_file_meta
    for sop_instance in ("1.2.3.4", "1.2.3.45"):  # odd and even lengths
        expected = io.BytesIO()
        expected.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(expected, create_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=sop_instance,
                                                        transfer_syntax="1.2.840.10008.1.2.4.50"))
        assert dimse.file_meta(sop_class_uid=CTImageStorage, sop_instance_uid=sop_instance,
                               transfer_syntax_uid="1.2.840.10008.1.2.4.50",
                               implementation_class_uid=PYNETDICOM_IMPLEMENTATION_UID,
                               implementation_version_name=PYNETDICOM_IMPLEMENTATION_VERSION) == expected.getvalue()
