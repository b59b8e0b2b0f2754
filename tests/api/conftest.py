"""An api service on a free loopback port over a real SQLite store, and real tokens."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest

from services.api.service import ApiService
from services.core.auth import issue_token
from services.core.runtime import build_runtime
from services.core.settings import Settings
from tests.support import EXAMPLE_CONSORTIUM, free_port

SECRET = "test-secret-" + "x" * 32

# Two clinics' studies, and the same patient (the same resident ID: one consortium identity)
# seen at a third site.
ZHANG_SAN = "CN_RESIDENT_ID|410101196001011234"  # a valid resident ID (check digit 4)
STUDIES = {
    # chengguan-thc (cg-clinic): 张三's CT, and his earlier DX there
    "1.2.826.0.1.100.1": dict(organization="chengguan-thc", patient_id="CG001", patient_name="Zhang^San",
                              birth_date="19600101", study_date="20261123", modalities=["CT"], identity=ZHANG_SAN),
    "1.2.826.0.1.100.2": dict(organization="chengguan-thc", patient_id="CG001", patient_name="Zhang^San",
                              birth_date="19600101", study_date="20250301", modalities=["DX"]),
    # hongmiao-thc: the same patient by his resident ID (结果互认) under another Patient ID
    "1.2.826.0.1.100.3": dict(organization="hongmiao-thc", patient_id="HM777", patient_name="ZHANG^SAN",
                              birth_date="19600101", study_date="20240515", modalities=["DX"], identity=ZHANG_SAN),
    # hongmiao-thc: same name, another birth date: another person, never a prior
    "1.2.826.0.1.100.4": dict(organization="hongmiao-thc", patient_id="HM778", patient_name="Zhang^San",
                              birth_date="19851212", study_date="20240516", modalities=["DX"]),
    # dongba-thc (db-clinic): another clinic's patient
    "1.2.826.0.1.200.1": dict(organization="dongba-thc", patient_id="DB001", patient_name="Li^Si",
                              birth_date="19700202", study_date="20261123", modalities=["CT"]),
    "1.2.826.0.1.200.2": dict(organization="dongba-thc", patient_id="DB002", patient_name="王^五",
                              birth_date="19800303", study_date="20261123", modalities=["ECG"]),
}


def study_doc(uid: str, **fields: Any) -> dict[str, Any]:
    name = fields["patient_name"]
    return {"id": uid, "patient_name_key": name.upper(), "sex": "M", "study_time": "101500",
            "accession_number": "A" + uid[-3:], "study_id": "1", "study_description": "test",
            "referring_physician": "", "series_count": 1, "instance_count": 1, "state": "received",
            "revision": 1, "first_received_at": "2026-11-23T10:00:00.000Z",
            "last_update_at": f"2026-11-23T10:00:{uid[-1]}0.000Z", "specific_character_set": "ISO_IR 192",
            **fields}


async def seed_studies(store) -> None:
    async with store.transaction() as tx:
        for uid, fields in STUDIES.items():
            await tx.put("studies", study_doc(uid, **fields))
            series_uid = uid + ".1"
            await tx.put("series", {"id": series_uid, "study_uid": uid, "organization": fields["organization"],
                                    "modality": fields["modalities"][0], "series_number": 1, "instance_count": 1})
            await tx.put("instances", {"id": series_uid + ".1", "study_uid": uid, "series_uid": series_uid,
                                       "organization": fields["organization"], "instance_number": 1,
                                       "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"})


class Api:
    """A running api service and helpers to call it as a given user."""

    def __init__(self, rt, service: ApiService, session: aiohttp.ClientSession) -> None:
        self.rt, self.service, self.session = rt, service, session
        self.base = f"http://127.0.0.1:{service.port}"
        self._tokens: dict[str, str] = {}

    def token(self, user: str, **kw: Any) -> str:
        if kw:
            return issue_token(self.rt.consortium, user, SECRET, **kw)
        if user not in self._tokens:
            self._tokens[user] = issue_token(self.rt.consortium, user, SECRET)
        return self._tokens[user]

    async def call(self, method: str, path: str, *, user: str | None = None, token: str | None = None,
                   json: Any = None, data: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        """(status, parsed body, headers)."""
        headers = dict(headers or {})
        if user is not None:
            token = self.token(user)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, json=json, data=data, headers=headers) as resp:
            text = await resp.text()
            body = None
            if resp.content_type.endswith("json") and text:
                import json as _json
                body = _json.loads(text)
            return resp.status, body, resp.headers

    async def ok(self, method: str, path: str, user: str, json: Any = None, status: int = 200) -> Any:
        got, body, _ = await self.call(method, path, user=user, json=json)
        assert got == status, (method, path, user, got, body)
        return body

    async def create_request(self, uid: str, user: str = "cg-clinic", **kw: Any) -> dict[str, Any]:
        body = {"study_uid": uid, "kind": "imaging", "priority": "routine", "clinical_question": "咳嗽两周，排除肺炎", **kw}
        return await self.ok("POST", "/api/v1/reading-requests", user, body, status=201)


@pytest.fixture
async def api(tmp_path, monkeypatch):
    monkeypatch.delenv("YILIAN_TRUSTED_PROXIES", raising=False)
    settings = dataclasses.replace(
        Settings.from_env(consortium=str(EXAMPLE_CONSORTIUM)), data_dir=tmp_path,
        store_url=f"sqlite:///{tmp_path / 'yilian.db'}", bus_url="embedded:", blob_url=f"file://{tmp_path / 'blobs'}",
        bind_host="127.0.0.1", http_port=free_port(), jwt_secret=SECRET)
    rt = await build_runtime(settings)
    await seed_studies(rt.store)
    service = ApiService(rt)
    await service.start()
    rt.services.append(service)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(rt, service, session)
    finally:
        await service.stop()
        await rt.blobs.close()
        await rt.store.close()
