"""PDU framing in the asyncio upper layer (services/pacs_gateway/ul/stream.py).

The protocol is fed bytes cut at every possible place (one header split from its body as
DCMTK sends it, several PDUs in one read, one byte at a time), then a real gateway is sent a
C-STORE whose PDUs arrive coalesced and fragmented.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import time

import pytest
from pydicom import dcmread
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.sop_class import CTImageStorage

from services.core.instruments import dimse_counter
from services.pacs_gateway.ul import dimse, pdu
from services.pacs_gateway.ul.acceptor import _plain_ae_titles
from services.pacs_gateway.ul.pdu import ProtocolError
from services.pacs_gateway.ul.stream import PDUStream

from ..dicom_samples import make_study
from ..support import wait_for
from .conftest import CHENGGUAN_CT, DONGBA_DR
from .test_native_ul import associate_rq, read_pdu


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return pdu.HEADER.pack(pdu_type, len(body)) + body


FIRST = _pdu(pdu.A_ASSOCIATE_RQ, b"\x00\x01" + bytes(range(200)))
LATER = [_pdu(pdu.P_DATA_TF, struct.pack(">IBB", 1002, 1, 2) + bytes(range(250)) * 4),
         _pdu(pdu.P_DATA_TF, struct.pack(">IBB", 2, 1, 3)),  # an empty PDV
         _pdu(pdu.A_RELEASE_RQ, b"\x00" * 4)]


async def _unused(stream: PDUStream) -> None:
    raise AssertionError("not connected in this test")


def _stream(**kw) -> PDUStream:
    return PDUStream(_unused, first_limit=kw.pop("first_limit", 1 << 20), high_water=kw.pop("high_water", 1 << 20))


async def _framed(chunks: list[bytes], *, limit: int = 1 << 20) -> tuple[list, list]:
    stream = _stream()
    for chunk in chunks:
        stream.data_received(chunk)
    first = [(t, bytes(b)) for t, b in await stream.receive()]
    stream.read_pdus(limit)
    later = [(t, bytes(b)) for t, b in await stream.receive()]
    return first, later


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _decoded(raw: bytes) -> tuple[int, bytes]:
    return raw[0], raw[6:]


@pytest.mark.parametrize("size", [1, 5, 6, 7, 12, 211, 1000, 1 << 20])
async def test_pdus_are_framed_whole_however_the_bytes_are_cut(size):
    first, later = await _framed(_split(FIRST + b"".join(LATER), size))
    # the A-ASSOCIATE-RQ alone; what followed it is framed only once the acceptor asks
    assert first == [_decoded(FIRST)]
    assert later == [_decoded(raw) for raw in LATER]


async def test_header_and_body_in_separate_reads_as_dcmtk_sends_them():
    data = LATER[0]
    _, later = await _framed([FIRST, data[:12], data[12:], LATER[2]])
    assert later == [_decoded(data), _decoded(LATER[2])]


async def test_a_pdu_past_the_limit_or_of_unknown_type_ends_the_stream_after_what_came_before():
    stream = _stream()
    stream.data_received(FIRST)
    await stream.receive()
    stream.read_pdus(2000)
    stream.data_received(LATER[0] + _pdu(pdu.P_DATA_TF, bytes(2001)) + LATER[2])
    assert [t for t, _ in await stream.receive()] == [pdu.P_DATA_TF]
    with pytest.raises(ProtocolError) as error:
        await stream.receive()
    assert error.value.reason == pdu.REASON_INVALID_PDU_PARAMETER_VALUE

    stream = _stream(first_limit=100)  # the A-ASSOCIATE-RQ has its own, smaller limit
    stream.data_received(FIRST)
    with pytest.raises(ProtocolError):
        await stream.receive()

    stream = _stream()
    stream.data_received(FIRST)
    await stream.receive()
    stream.read_pdus(2000)
    stream.data_received(b"\x09\x00\x00\x00\x00\x02\x00\x00")
    with pytest.raises(ProtocolError) as error:
        await stream.receive()
    assert error.value.reason == pdu.REASON_UNRECOGNIZED_PDU


async def test_the_peers_end_in_the_middle_of_a_pdu_is_an_incomplete_read():
    stream = _stream()
    stream.data_received(FIRST[:50])
    stream.eof_received()
    with pytest.raises(asyncio.IncompleteReadError) as error:
        await stream.receive()
    assert error.value.partial == FIRST[6:50]


async def test_idle_timeout_counts_only_the_silence_of_one_wait():
    stream = _stream()
    stream.data_received(FIRST)
    await stream.receive()
    stream.read_pdus(1 << 20)
    stream.idle_timeout = 1.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    for raw in LATER[:2]:  # 1.2 s in all, never 1 s of silence: no timeout
        loop.call_later(0.6, stream.data_received, raw)
        assert [t for t, _ in await stream.receive()] == [raw[0]]
    assert loop.time() - started >= 1.2
    silent = time.monotonic()
    with pytest.raises(TimeoutError):
        await stream.receive()
    assert 1.0 <= time.monotonic() - silent < 10


async def test_reading_pauses_while_too_much_waits_for_the_association():
    high_water = 1 << 16
    served: list[PDUStream] = []

    async def serve(stream: PDUStream) -> None:
        served.append(stream)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: PDUStream(serve, first_limit=1 << 20, high_water=high_water),
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = struct.pack(">IBB", (1 << 16) + 2, 1, 0) + bytes(1 << 16)
    data = FIRST + _pdu(pdu.P_DATA_TF, body) * 512  # 32 MiB: more than the kernel's socket buffers hold
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await wait_for(lambda: served, what="the connection")
        stream = served[0]
        await stream.receive()
        stream.read_pdus(1 << 20)
        await wait_for(lambda: stream.queued > high_water, what="PDUs queued")
        assert stream.transport is not None and not stream.transport.is_reading()
        assert stream.queued < high_water + (1 << 20)  # bounded: one read past the mark at most
        received = 0
        while received < 512:
            received += len(await asyncio.wait_for(stream.receive(), 10))
        assert received == 512
        await asyncio.wait_for(writer.drain(), 10)
    finally:
        writer.close()
        server.close()


# --- a real gateway -------------------------------------------------------------------------
def _c_store_rq(sop_class: str, sop_instance: str, message_id: int) -> bytes:
    def element(number: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0, number, len(value)) + value

    def uid(value: str) -> bytes:
        raw = value.encode()
        return raw + b"\x00" if len(raw) % 2 else raw

    return (element(0x0002, uid(sop_class)) + element(0x0100, struct.pack("<H", dimse.C_STORE_RQ))
            + element(0x0110, struct.pack("<H", message_id)) + element(0x0700, b"\x00\x00")
            + element(0x0800, b"\x00\x00") + element(0x1000, uid(sop_instance)))


async def test_c_store_pdus_coalesced_or_fragmented_are_stored(gateway, tmp_path):
    study = make_study(tmp_path, instances=2, rows=64, columns=64, transfer_syntax="1.2.840.10008.1.2")
    for message_id, path in enumerate(study.files, start=1):
        raw = path.read_bytes()
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        data_set = raw[144 + struct.unpack_from("<I", raw, 140)[0]:]
        message = (pdu.p_data_tf(1, _c_store_rq(CTImageStorage, ds.SOPInstanceUID, message_id), command=True,
                                 max_pdu=0)
                   + pdu.p_data_tf(1, data_set, command=False, max_pdu=4096)
                   + _pdu(pdu.A_RELEASE_RQ, b"\x00" * 4))
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(associate_rq(abstract=CTImageStorage))
        assert (await read_pdu(reader))[0] == pdu.A_ASSOCIATE_AC
        if message_id == 1:  # the whole C-STORE and the release in one write
            writer.write(message)
        else:  # in pieces that cut headers and PDVs apart
            for piece in _split(message, 7):
                writer.write(piece)
                await writer.drain()
        pdu_type, body = await read_pdu(reader)
        assert pdu_type == pdu.P_DATA_TF
        [(context_id, control, response)] = list(pdu.pdvs(body))
        response = bytes(response)
        command = dimse.decode(response)
        assert (context_id, control) == (1, pdu.COMMAND | pdu.LAST) and command.field == dimse.C_STORE_RSP
        assert command.sop_instance_uid == ds.SOPInstanceUID
        assert struct.pack("<HHIH", 0, 0x0900, 2, 0) in response  # Success
        assert (await read_pdu(reader))[0] == pdu.A_RELEASE_RP
        writer.close()
    assert await gateway.count("instances") == 2 and gateway.staging_files() == []
    assert dimse_counter(gateway.rt).value(command="C-STORE", status="0x0000") == 2  # /metrics


async def test_a_repeated_association_request_is_answered_alike_and_still_checked(gateway, monkeypatch):
    async def associate(calling: str = CHENGGUAN_CT) -> tuple[int, bytes]:
        request = associate_rq(abstract=CTImageStorage, calling=calling)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(request)
            answer = await read_pdu(reader)
            if answer[0] == pdu.A_ASSOCIATE_AC:
                writer.write(_pdu(pdu.A_RELEASE_RQ, b"\x00" * 4))
                assert (await read_pdu(reader))[0] == pdu.A_RELEASE_RP
            return answer
        finally:
            writer.close()

    first, second = await associate(), await associate()
    assert first[0] == pdu.A_ASSOCIATE_AC and second == first
    # the same proposal from another modality: the same negotiation, its own AE title in the answer
    other = await associate(DONGBA_DR)
    ac = A_ASSOCIATE_AC()
    ac.decode(pdu.HEADER.pack(other[0], len(other[1])) + other[1])
    assert (ac.reserved_aet, ac.reserved_aec) == ("YILIAN", DONGBA_DR)
    assert other[1][:4] + other[1][36:] == first[1][:4] + first[1][36:]
    # the calling AE title leaves the consortium: the very same request is now rejected
    organizations = gateway.rt.consortium.organizations
    org = next(o for o in organizations.values() if CHENGGUAN_CT in o.modality_aes)
    monkeypatch.setitem(organizations, org.id, dataclasses.replace(
        org, modality_aes=tuple(ae for ae in org.modality_aes if ae != CHENGGUAN_CT)))
    pdu_type, body = await associate()
    assert pdu_type == pdu.A_ASSOCIATE_RJ and tuple(body[1:]) == pdu.RJ_CALLING_AE


@pytest.mark.parametrize(("titles", "plain"), [
    (b"YILIAN          CG_CT1          ", ("YILIAN", "CG_CT1")),
    (b"  YILIAN        CG CT1          ", ("YILIAN", "CG CT1")),
    (b"                CG_CT1          ", None),  # all spaces: pynetdicom refuses it
    (b"YI\\LIAN         CG_CT1          ", None),
    (b"YILIAN\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00CG_CT1          ", None),
])
def test_ae_titles_read_by_hand_are_the_ones_pynetdicom_reads(titles, plain):
    raw = associate_rq()
    raw = raw[:10] + titles + raw[42:]
    assert _plain_ae_titles(raw) == plain
    if plain is not None:
        rq = A_ASSOCIATE_RQ()
        rq.decode(raw)
        assert (rq.called_ae_title.strip(), rq.calling_ae_title.strip()) == plain
