"""A webhook whose HMAC secret is not set: the embedded default makes one under the data dir
(like the JWT secret) and delivers; a scale-out deployment refuses to start.  Never a dead
letter per result.  And the example consortium works out of the box."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import pytest

from services.core.consortium import load_consortium
from services.core.settings import Settings
from services.delivery import secrets

from ..support import EXAMPLE_CONSORTIUM, wait_for
from .conftest import WEBHOOK_ENV


def _settings(tmp_path: Path, store_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", consortium_path=EXAMPLE_CONSORTIUM, store_url=store_url,
                    bus_url="embedded:", blob_url=f"file://{tmp_path / 'blobs'}")


def test_the_example_consortium_needs_no_secret_to_start(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    # a webhook in the example would need a receiver and a secret nobody has set
    assert [o.id for o in consortium.organizations.values() if o.webhook] == []
    with caplog.at_level(logging.WARNING, logger="yilian.delivery"):
        secrets.check(consortium, _settings(tmp_path, "mongodb://db.example:27017/yilian"))
    assert not caplog.records


def test_a_missing_secret_stops_a_scale_out_start(tmp_path, monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    text = EXAMPLE_CONSORTIUM.read_text("utf-8").replace("# webhook: {", "webhook: {")
    path = tmp_path / "consortium.yaml"
    path.write_text(text, "utf-8")
    consortium = load_consortium(path)
    assert consortium.organizations["chengguan-thc"].webhook is not None
    with pytest.raises(SystemExit, match=f"chengguan-thc.*{WEBHOOK_ENV}"):
        secrets.check(consortium, _settings(tmp_path, "mongodb://db.example:27017/yilian"))
    monkeypatch.setenv(WEBHOOK_ENV, "set-by-the-operator")
    secrets.check(consortium, _settings(tmp_path, "mongodb://db.example:27017/yilian"))


async def test_a_missing_secret_is_generated_in_the_embedded_default_and_results_are_delivered(
        make_yilian, clinic_scp, webhook_receiver, monkeypatch, caplog):
    clinic_scp.start()
    with caplog.at_level(logging.WARNING, logger="yilian.delivery"):
        monkeypatch.delenv(WEBHOOK_ENV)
        y = await make_yilian(scp_port=clinic_scp.port, webhook_port=webhook_receiver.port)
    warned = [r for r in caplog.records if getattr(r, "secret_env", None) == WEBHOOK_ENV]
    assert warned and warned[0].levelno == logging.WARNING, caplog.text
    secret_file = Path(warned[0].path)
    assert secret_file.is_relative_to(y.rt.settings.data_dir) and secret_file.stat().st_mode & 0o077 == 0
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32

    report_id = (await y.sign(await y.send_study()))["report_id"]

    async def settled() -> bool:
        d = (await y.deliveries(report_id)).get("webhook")
        return d is not None and d["state"] in ("delivered", "dead")
    await wait_for(settled, timeout=30, what="the webhook delivery settled")
    d = (await y.deliveries(report_id))["webhook"]
    assert d["state"] == "delivered", d
    sent = webhook_receiver.requests[-1]
    expected = "sha256=" + hmac.new(secret.encode(), sent["body"], hashlib.sha256).hexdigest()
    assert sent["headers"]["X-Yilian-Signature"] == expected
