"""The ``yilian`` command: help, tokens, config checks, and ``yilian up`` as a real process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import socket
import sqlite3
import subprocess
import time
import urllib.request
import uuid

import pytest

from services.cli import parser
from services.core.auth import verify_token
from services.core.consortium import load_consortium
from services.core.runtime import SERVICE_NAMES
from services.core.settings import Settings

from .e2e.conftest import yilian_process  # noqa: F401 - the fixture: processes killed at teardown
from .e2e.process import clean_env, yilian_command
from .dicom_samples import DX_IMAGE, make_study, storescu
from .support import EXAMPLE_CONSORTIUM, ROOT, wait_for_sync

SECRET = "cli-test-secret-0123456789abcdef0123"


def yilian(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*yilian_command(), *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**env), cwd=ROOT)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# --- help --------------------------------------------------------------------------------------

def test_top_level_help_lists_every_command_and_the_environment():
    out = yilian("--help")
    assert out.returncode == 0, out.stderr
    for name in subcommands():
        assert name in out.stdout
    assert "docs/configuration.md" in out.stdout


@pytest.mark.parametrize("command", ["up", "serve", "token", "check-config", "audit", "user"])
def test_subcommand_help_mentions_every_option(command):
    sp = subcommands()[command]
    out = yilian(command, "--help")
    assert out.returncode == 0, out.stderr
    for action in sp._actions:
        for option in action.option_strings:
            assert option in out.stdout, f"{command} --help does not mention {option}"
        if not action.option_strings:  # a positional: its name and every choice
            assert (action.metavar or action.dest) in out.stdout
            for choice in action.choices or ():
                assert choice in out.stdout
    assert sp.description and sp.description.split()[0] in out.stdout


def test_every_command_is_tested_here():
    assert set(subcommands()) == {"up", "serve", "token", "check-config", "audit", "user", "ca",
                                  "verify"}  # ca, verify: tests/delivery/test_signature.py


def test_serve_offers_exactly_the_services():
    serve = subcommands()["serve"]
    name = next(a for a in serve._actions if a.dest == "name")
    assert tuple(name.choices) == SERVICE_NAMES


@pytest.mark.parametrize("command", ["up", "serve"])
def test_help_lists_every_environment_variable_settings_read(command):
    source = (ROOT / "services" / "core" / "settings.py").read_text()
    variables = set(re.findall(r"YILIAN_[A-Z0-9_]+", source))
    assert len(variables) >= 10 and dataclasses.fields(Settings)
    out = yilian(command, "--help").stdout
    missing = sorted(v for v in variables if v not in out)
    assert not missing, f"yilian {command} --help does not mention {missing}"


def test_unknown_service_is_refused():
    out = yilian("serve", "radiology")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr and "pacs_gateway" in out.stderr


# --- audit verify -------------------------------------------------------------------------------

def test_audit_verify_exits_0_on_an_intact_trail_and_1_naming_a_deleted_record(tmp_path):
    import asyncio

    from services.api.auditing import AuditWriter
    from services.core.store.sqlite import SqliteStore
    url = f"sqlite:///{tmp_path / 'yilian.db'}"

    async def write() -> None:
        store = SqliteStore(url)
        await store.open()
        writer = AuditWriter(store)
        for i in range(3):
            await writer.record(actor="auditor", role="auditor", action="audit.read", resource=f"audit/{i}")
        await store.close()
    asyncio.run(write())
    out = yilian("audit", "verify", YILIAN_STORE_URL=url, YILIAN_DATA_DIR=str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["intact"] and result["records"] == 3 and result["head_seq"] == 3
    with sqlite3.connect(tmp_path / "yilian.db") as db:
        db.execute("DELETE FROM \"c_audit\" WHERE json_extract(doc, '$.seq') = 2")
    out = yilian("audit", "verify", YILIAN_STORE_URL=url, YILIAN_DATA_DIR=str(tmp_path))
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["first_break"] == {
        "seq": 2, "problem": "missing", "message": "record 2 is missing (the next one found is 3)", "id": None}


# --- user passwd -------------------------------------------------------------------------------

def test_user_passwd_sets_an_argon2id_hash_the_sign_in_accepts(tmp_path):
    from services.core.passwords import verify_password
    url = f"sqlite:///{tmp_path / 'yilian.db'}"

    def passwd(user: str, text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*yilian_command(), "user", "passwd", user, "--stdin"], input=text, capture_output=True,
                              text=True, timeout=30, env=clean_env(YILIAN_STORE_URL=url, YILIAN_DATA_DIR=str(tmp_path)),
                              cwd=ROOT)
    out = passwd("admin", "首位管理员的密码-2026\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"user": "admin", "password_set": True}
    with sqlite3.connect(tmp_path / "yilian.db") as db:
        doc = json.loads(db.execute("SELECT doc FROM c_users").fetchone()[0])
        actions = [json.loads(d)["action"] for (d,) in db.execute("SELECT doc FROM c_audit")]
    assert doc["id"] == "admin" and doc["password_hash"].startswith("$argon2id$")
    assert "首位管理员" not in json.dumps(doc, ensure_ascii=False)
    assert verify_password(doc["password_hash"], "首位管理员的密码-2026") and not verify_password(doc["password_hash"], "x")
    assert actions == ["user.password.set"]
    for user, text, why in (("nobody", "long-enough-password\n", "no user 'nobody'"),
                            ("admin", "short\n", "at least 10 characters")):
        out = passwd(user, text)
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out


# --- token -------------------------------------------------------------------------------------

def test_token_for_a_reader_verifies_with_role_and_organisation():
    out = yilian("token", "--user", "dr-wang", YILIAN_JWT_SECRET=SECRET)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    principal = verify_token(token, SECRET, load_consortium(EXAMPLE_CONSORTIUM))
    assert (principal.user_id, principal.role, principal.organization, principal.centre) == \
        ("dr-wang", "reader", "county-hospital", "county-imaging")
    assert principal.expires_at - time.time() == pytest.approx(8 * 3600, abs=60)


def test_token_ttl_and_a_wrong_secret():
    out = yilian("token", "--user", "zz-clinic", "--ttl", "60", YILIAN_JWT_SECRET=SECRET)
    assert out.returncode == 0, out.stderr
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    principal = verify_token(out.stdout.strip(), SECRET, consortium)
    assert principal.role == "clinic" and principal.organization == "zhangzhuang-vc"
    assert principal.expires_at - time.time() == pytest.approx(60, abs=10)
    from services.core.auth import AuthError
    with pytest.raises(AuthError):
        verify_token(out.stdout.strip(), "another-secret-0123456789abcdef0123", consortium)


def test_token_without_a_secret_refuses_and_names_where_it_looked(tmp_path):
    """A second shell without the server's YILIAN_DATA_DIR: no second secret that every call would fail
    against (401 with no hint), but an error naming the file it looked for and what to set."""
    out = yilian("token", "--user", "admin", YILIAN_DATA_DIR=str(tmp_path / "var"))
    assert out.returncode == 2, out
    assert out.stdout == ""
    assert str(tmp_path / "var" / "jwt.secret") in out.stderr
    assert "YILIAN_DATA_DIR" in out.stderr and "YILIAN_JWT_SECRET" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "var").exists()  # nothing invented


def test_token_finds_the_secret_the_running_server_wrote(tmp_path, yilian_process):
    yl = yilian_process(tmp_path / "data", YILIAN_JWT_SECRET="")  # the embedded default: no variable
    yl.start()
    secret_file = tmp_path / "data" / "jwt.secret"
    assert secret_file.stat().st_mode & 0o077 == 0  # written at start, readable by its owner only
    out = yilian("token", "--user", "dr-wang", YILIAN_DATA_DIR=str(tmp_path / "data"))
    assert out.returncode == 0, out.stderr
    request = urllib.request.Request(f"http://127.0.0.1:{yl.http_port}/api/v1/worklist",
                                     headers={"Authorization": f"Bearer {out.stdout.strip()}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    assert yl.terminate() == 0
    # The same rule finds it after the server stopped, and a restart keeps it.
    again = yilian("token", "--user", "admin", YILIAN_DATA_DIR=str(tmp_path / "data"))
    assert again.returncode == 0, again.stderr
    consortium = load_consortium(EXAMPLE_CONSORTIUM)
    assert verify_token(again.stdout.strip(), secret_file.read_text().strip(), consortium).role == "admin"


@pytest.mark.parametrize("ttl", ["-5", "0"])
def test_token_with_a_ttl_that_is_not_positive_is_refused(ttl):
    out = yilian("token", "--user", "dr-wang", "--ttl", ttl, YILIAN_JWT_SECRET=SECRET)
    assert out.returncode == 2, out
    assert out.stdout == ""  # no token born expired
    assert "ttl" in out.stderr and ttl in out.stderr and "positive" in out.stderr


def test_token_for_an_unknown_user_exits_2():
    out = yilian("token", "--user", "dr-nobody", YILIAN_JWT_SECRET=SECRET)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "dr-nobody" in out.stderr and "demo-county" in out.stderr


def test_token_needs_a_user():
    out = yilian("token")
    assert out.returncode == 2 and "--user" in out.stderr


# --- check-config ------------------------------------------------------------------------------

def test_check_config_on_the_example():
    out = yilian("check-config")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["consortium_id"] == "demo-county" and summary["organizations"] == 7


def test_check_config_on_a_broken_file_names_the_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    lines = EXAMPLE_CONSORTIUM.read_text("utf-8").splitlines()
    n = next(i for i, line in enumerate(lines) if "parent: dongba-thc" in line)
    lines[n] = lines[n].replace("dongba-thc", "no-such-thc")
    broken.write_text("\n".join(lines), "utf-8")
    for args, env in ((("check-config", "--consortium", str(broken)), {}),
                      (("check-config",), {"YILIAN_CONSORTIUM": str(broken)})):
        out = yilian(*args, **env)
        assert out.returncode == 2, out
        assert "configuration error" in out.stderr and "no-such-thc" in out.stderr
        # The error names the organisation entry that holds the dangling parent.
        entry = max(i for i in range(n) if lines[i].lstrip().startswith("- id:")) + 1
        assert f"{broken}:{entry}:" in out.stderr


def test_check_config_on_a_missing_file():
    out = yilian("check-config", "--consortium", "/nonexistent/consortium.yaml")
    assert out.returncode == 2 and "cannot read" in out.stderr


# --- yilian up as a process --------------------------------------------------------------------

def test_up_is_ready_answers_readyz_and_stops_cleanly_on_sigterm(tmp_path, yilian_process):
    yl = yilian_process(tmp_path / "data")
    ready = yl.start()
    assert ready["http_port"] == yl.http_port
    assert set(ready["services"]) == set(SERVICE_NAMES)
    assert ready["ae_title"] == "YILIAN"
    status, body = yl.http("/readyz")
    assert status == 200, body
    assert json.loads(body)["status"] == "ready"
    assert yl.http("/healthz")[0] == 200
    assert (tmp_path / "data" / "yilian.db").exists()
    started = time.monotonic()
    assert yl.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    log = yl.log_path.read_text()
    assert '"message": "stopped"' in log
    for line in log.splitlines():  # every log line is one JSON object
        json.loads(line)


def test_up_announces_the_dicom_port_and_the_gateway_answers_c_echo(tmp_path, yilian_process):
    yl = yilian_process(tmp_path / "data", YILIAN_AE_TITLE="COUNTY_GW")
    ready = yl.start()
    assert ready["ae_title"] == "COUNTY_GW"
    assert ready["dicom_port"] == yl.dicom_port
    # Ready means the DICOM listener accepts associations: a registered modality's C-ECHO succeeds.
    echo = subprocess.run(["/usr/bin/echoscu", "-aet", "CG_DR1", "-aec", "COUNTY_GW", "127.0.0.1",
                           str(yl.dicom_port)], capture_output=True, text=True, timeout=30)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert yl.terminate() == 0


def test_serve_one_service_answers_readyz(tmp_path, yilian_process):
    yl = yilian_process(tmp_path / "data", args=("serve", "workflow"))
    ready = yl.start()
    assert ready["services"] == ["workflow"] and ready["http_port"] == yl.http_port
    status, body = yl.http("/readyz")
    assert status == 200 and json.loads(body)["services"] == ["workflow"]
    assert yl.terminate() == 0


def test_up_with_a_bad_store_url_scheme_is_a_clear_error(tmp_path):
    out = yilian("up", YILIAN_DATA_DIR=str(tmp_path), YILIAN_STORE_URL="postgres://db/yilian",
                 YILIAN_HTTP_PORT="0", YILIAN_DICOM_PORT="0")
    assert out.returncode == 2
    assert "YILIAN_STORE_URL" in out.stderr and "postgres://db/yilian" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("listener", ["YILIAN_HTTP_PORT", "YILIAN_DICOM_PORT"])
def test_up_on_a_port_in_use_is_a_clear_error(tmp_path, listener):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {"YILIAN_DATA_DIR": str(tmp_path), "YILIAN_BIND_HOST": "127.0.0.1", "YILIAN_HTTP_PORT": "0",
               "YILIAN_DICOM_PORT": "0", listener: port}
        out = yilian("up", **env)
    assert out.returncode == 2, out
    assert "cannot listen" in out.stderr and f"{listener}={port}" in out.stderr
    assert "Traceback" not in out.stderr and '"ready"' not in out.stdout


@pytest.mark.parametrize("variable,value", [("YILIAN_BUS_URL", "amqp://rabbit"), ("YILIAN_BLOB_URL", "s3://bucket"),
                                            ("YILIAN_HTTP_PORT", "eighty"),
                                            ("YILIAN_STUDY_QUIET_SECONDS", "soon"),
                                            ("YILIAN_GATEWAY_INDEXER", "elsewhere")])
def test_up_with_a_bad_setting_is_a_clear_error(tmp_path, variable, value):
    env = {"YILIAN_DATA_DIR": str(tmp_path), "YILIAN_HTTP_PORT": "0", "YILIAN_DICOM_PORT": "0", variable: value}
    out = yilian("up", **env)
    assert out.returncode == 2, out
    assert variable in out.stderr and value in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.kafka
@pytest.mark.dcmtk
def test_serve_gateway_and_workflow_as_separate_processes_over_kafka(tmp_path, tansu_url, yilian_process):
    """The scale-out shape: one process per service, events through a Kafka broker (Tansu).

    A DX study C-STOREd to the gateway process becomes, through ``study.received`` on Kafka,
    the site-rule reading request of the workflow process.  (They share one SQLite file here
    because this machine has no MongoDB server; the bus between them is Kafka.)
    """
    bus = f"{tansu_url}?prefix=cli{uuid.uuid4().hex[:8]}.&partitions=2&session_timeout_ms=1000"
    common = {"YILIAN_BUS_URL": bus, "YILIAN_KAFKA_IDEMPOTENT": "false", "YILIAN_STUDY_QUIET_SECONDS": "1"}
    data = tmp_path / "data"
    gateway = yilian_process(data, args=("serve", "pacs_gateway"), **common)
    workflow = yilian_process(data, args=("serve", "workflow"), **common)
    ready = gateway.start()
    assert ready["services"] == ["pacs_gateway"]
    assert (ready["dicom_port"], ready["http_port"]) == (gateway.dicom_port, gateway.http_port)
    assert workflow.start()["services"] == ["workflow"]
    assert gateway.http("/readyz")[0] == 200 and workflow.http("/readyz")[0] == 200

    study = make_study(tmp_path / "dx", instances=3, modality="DX", sop_class_uid=DX_IMAGE, patient_id="HM-1")
    sent = storescu(gateway.dicom_port, study.files, calling="HM_DR1")  # Hongmiao: site rule for DX
    assert sent.returncode == 0, sent.output

    def requests() -> list[str]:
        con = sqlite3.connect(f"file:{data / 'yilian.db'}?mode=ro", uri=True, timeout=5)
        try:
            return [row[0] for row in con.execute(
                "SELECT id FROM \"c_reading_requests\" WHERE json_extract(doc, '$.study_uid') = ?",
                (study.study_uid,))]
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    wait_for_sync(lambda: len(requests()) == 1, timeout=60,
                  what="the workflow process to create the site-rule reading request from Kafka")
    assert gateway.terminate() == 0 and workflow.terminate() == 0
    assert len(requests()) == 1


@pytest.mark.parametrize("value,cores,expected", [(None, 2, "process"), ("auto", 1, "inline"), ("auto", 8, "process"),
                                                  ("inline", 8, "inline"), ("PROCESS", 1, "process")])
def test_the_gateway_indexes_in_a_process_of_its_own_where_there_is_a_second_core(monkeypatch, value, cores,
                                                                                  expected):
    from services.core.settings import Settings
    if value is None:
        monkeypatch.delenv("YILIAN_GATEWAY_INDEXER", raising=False)
    else:
        monkeypatch.setenv("YILIAN_GATEWAY_INDEXER", value)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert Settings.from_env().gateway_indexer == expected
