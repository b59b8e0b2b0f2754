"""``yilian``: run the consortium backend, one service, or issue a token."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .core import logs
from .core.consortium import ConfigError, consortium_summary, load_consortium
from .core.private import restrict_new_files
from .core.runtime import SERVICE_NAMES, Runtime, run
from .core.settings import Settings

log = logging.getLogger("yilian")

ENVIRONMENT_HELP = """\
environment:
  YILIAN_DATA_DIR        data directory for the embedded default (default ./var)
  YILIAN_CONSORTIUM      consortium YAML file (default deploy/consortium.example.yaml)
  YILIAN_STORE_URL       sqlite:///PATH (default $YILIAN_DATA_DIR/yilian.db) or mongodb://...
  YILIAN_BUS_URL         embedded: (default) or kafka://HOST:PORT[,HOST:PORT]
  YILIAN_BLOB_URL        file:///DIR (default $YILIAN_DATA_DIR/blobs) or gridfs: (default with MongoDB)
  YILIAN_BIND_HOST       address the listeners bind to (default 0.0.0.0)
  YILIAN_HTTP_PORT       HTTP API port; health port of a 'serve' process (default 8080)
  YILIAN_DICOM_PORT      DICOM port of the PACS gateway (default 11112)
  YILIAN_AE_TITLE        the gateway's called AE title (default YILIAN)
  YILIAN_JWT_SECRET      token signing secret (default: $YILIAN_DATA_DIR/jwt.secret, which 'up' writes once)
  YILIAN_CA_SECRET       encrypts the embedded CA's private keys (default: $YILIAN_DATA_DIR/ca.secret, written once)
  YILIAN_LOG_LEVEL       DEBUG, INFO (default), WARNING, ERROR
  YILIAN_VIEWER_DIR      the OHIF Viewer served at /viewer/ (default var/viewer of the source tree; make viewer)
  YILIAN_TIMEZONE        time zone of times shown to people and written in DICOM (default: the
                         consortium file's timezone, Asia/Shanghai)
  YILIAN_KAFKA_IDEMPOTENT  idempotent Kafka producer (default true; false for test brokers)
  YILIAN_RELAY_LEASE_SECONDS  a process's lease on a partition of the outbox (Kafka; default 10)
  YILIAN_GATEWAY_WORKERS   PACS gateway worker processes (default 1)
  YILIAN_GATEWAY_INDEXER   auto (default: process with 2+ cores), process or inline: where instances are indexed
  YILIAN_STUDY_QUIET_SECONDS  quiet time before study.received (default 30)
  YILIAN_MAX_INSTANCE_BYTES   largest accepted DICOM instance (default 2 GiB)
  YILIAN_MAX_INFLATED_BYTES, YILIAN_MAX_INFLATE_RATIO  ceiling of a deflated data set once inflated (256 MiB, 100x)
  YILIAN_MAX_SEQUENCE_DEPTH   deepest sequence nesting accepted (default 64)
  YILIAN_GATEWAY_INLINE_BYTES   instances up to this size are received in memory (default 1 MiB)
  YILIAN_GATEWAY_JOURNAL_SEGMENT_BYTES   size of an ingest journal segment (default 32 MiB)
  YILIAN_DUPLICATE_POLICY  keep_first (default) or replace, for a re-sent SOP instance
  YILIAN_DICOM_TLS_CERT, YILIAN_DICOM_TLS_KEY, YILIAN_DICOM_TLS_CA  DICOM TLS (PEM files)
  YILIAN_DICOM_NATIVE_UL  asyncio DICOM upper layer for C-ECHO/C-STORE (default true; false: pynetdicom)
  YILIAN_DICOM_NETWORK_TIMEOUT  seconds a silent DICOM peer is kept (default 60)
  YILIAN_DICOM_MAX_ASSOCIATIONS  concurrent DICOM associations per gateway process (default 64)
  YILIAN_DICOM_MAX_ASSOCIATIONS_PER_AE    of those, from one calling AE title (default 8)
  YILIAN_DICOM_MAX_ASSOCIATIONS_PER_PEER  of those, from one peer address (default 16)
  YILIAN_CORS_ORIGINS    comma-separated origins allowed to call the HTTP API
  YILIAN_HTTP_TLS_CERT, YILIAN_HTTP_TLS_KEY  HTTPS on YILIAN_HTTP_PORT (PEM files); desk cookies get Secure
  YILIAN_SESSION_IDLE_SECONDS  a desk session ends after this long unused (default 1800)
  YILIAN_SESSION_MAX_SECONDS   ... and this long after sign-in whatever its use (default 43200)
  YILIAN_SIGNIN_FREE_FAILURES  failed sign-ins of one user name before each next waits 1, 2, 4 ... s (default 5)
  YILIAN_SIGNIN_LOCK_FAILURES, YILIAN_SIGNIN_LOCK_SECONDS  failures that lock the name, for how long (10, 900)
  See docs/configuration.md for every variable.
"""


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _announce(rt: Runtime) -> None:
    # A service says where it listens through ``port`` (HTTP) and ``dicom_port`` (DIMSE);
    # a ``serve`` process without the api has the runtime's own health listener.
    listeners: dict[str, int] = {}
    for service in rt.services:
        for attr, kind in (("port", "http"), ("dicom_port", "dicom")):
            if getattr(service, attr, None):
                listeners[kind] = getattr(service, attr)
    if "http" not in listeners and rt.shared.get("health_port"):
        listeners["http"] = rt.shared["health_port"]
    log.info("yilian ready", extra={"listeners": listeners, "services": [s.name for s in rt.services],
                                    "store": _redact(rt.settings.store_url),
                                    "bus": _redact(rt.settings.bus_url), "consortium": rt.consortium.id})
    print(json.dumps({"ready": True, "services": [s.name for s in rt.services],
                      "http_port": listeners.get("http"), "dicom_port": listeners.get("dicom"),
                      "ae_title": rt.settings.ae_title}),
          flush=True)


def _redact(url: str) -> str:
    """Hide a password in a URL before logging it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


async def _run(settings: Settings, names: tuple[str, ...]) -> None:
    stop = asyncio.Event()
    _install_signals(stop)
    await run(settings, names, ready=_announce, stop=stop)


def cmd_up(args: argparse.Namespace) -> int:
    settings = Settings.from_env(consortium=args.consortium)
    logs.configure(settings.log_level)
    asyncio.run(_run(settings, SERVICE_NAMES))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(consortium=args.consortium)
    logs.configure(settings.log_level)
    asyncio.run(_run(settings, (args.name,)))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .core.auth import AuthError, issue_token
    settings = Settings.from_env(consortium=args.consortium)
    consortium = load_consortium(settings.consortium_path)
    try:
        print(issue_token(consortium, args.user, settings.secret(), ttl=args.ttl))
    except AuthError as exc:
        print(f"yilian token: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = Settings.from_env(consortium=args.consortium)
    consortium = load_consortium(settings.consortium_path)
    print(json.dumps(consortium_summary(consortium), ensure_ascii=False))
    return 0


async def _verify_audit(settings: Settings) -> dict:
    from .core import audit
    from .core.events import registry
    from .core.runtime import make_store
    store = make_store(settings.store_url, registry().validate)
    await store.open()
    try:
        return (await audit.verify(store)).to_dict()
    finally:
        await store.close()


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = Settings.from_env(consortium=args.consortium)
    result = asyncio.run(_verify_audit(settings))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["intact"] else 1


async def _set_password(settings: Settings, user_id: str, password: str) -> str | None:
    import time

    from .core.events import registry
    from .core.passwords import USERS, set_password
    from .core.runtime import make_store
    consortium = load_consortium(settings.consortium_path)
    store = make_store(settings.store_url, registry().validate)
    await store.open()
    try:
        user = consortium.users.get(user_id)
        stored = await store.get(USERS, user_id)
        if user is None and not (stored and stored.get("role")):
            return f"no user {user_id!r} in consortium {consortium.id!r} or among the users an admin created"
        org = user.organization if user else stored.get("organization")
        await set_password(store, user_id, password, now=time.time(), by="system:cli", audit_record=dict(
            actor="system:cli", role="system", action="user.password.set", resource=f"user/{user_id}",
            organization=org, detail={"by": "yilian user passwd"}))
        return None
    finally:
        await store.close()


def _read_password(from_stdin: bool) -> str:
    """From the terminal, twice, without echo; or the first line of stdin (``--stdin``, for scripts)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    first = getpass.getpass("新密码 New password: ")
    if getpass.getpass("再输一次 Again: ") != first:
        raise ValueError("the two passwords differ (两次输入的密码不一致)")
    return first


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from .core.passwords import PasswordRejected, check_new
    settings = Settings.from_env(consortium=args.consortium)
    try:
        password = check_new(_read_password(args.stdin))
    except (ValueError, PasswordRejected) as exc:
        print(f"yilian user passwd: {exc}", file=sys.stderr)
        return 2
    problem = asyncio.run(_set_password(settings, args.user, password))
    if problem:
        print(f"yilian user passwd: {problem}", file=sys.stderr)
        return 2
    print(json.dumps({"user": args.user, "password_set": True}, ensure_ascii=False))
    return 0


async def _backfill_identity(settings: Settings) -> dict:
    from dataclasses import asdict

    from .core.events import registry
    from .core.runtime import make_blobs, make_store
    from .pacs_gateway.backfill import backfill_identity
    issuers = load_consortium(settings.consortium_path).identity_issuers  # the consortium's accepted issuers
    store = make_store(settings.store_url, registry().validate)
    await store.open()
    blobs = make_blobs(settings.blob_url, store)
    await blobs.open()
    try:
        return asdict(await backfill_identity(store, blobs, issuers=issuers))
    finally:
        await blobs.close()
        await store.close()


def cmd_identity_backfill(args: argparse.Namespace) -> int:
    settings = Settings.from_env(consortium=args.consortium)
    print(json.dumps(asyncio.run(_backfill_identity(settings))))
    return 0


def _positive_seconds(raw: str) -> int:
    """A token lifetime: a token with none would be born expired (every call answers 401)."""
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {raw!r}")
    return seconds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yilian", description="Yilian (医联): telemedicine collaboration backend of a medical consortium.",
        epilog=ENVIRONMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def consortium_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--consortium", metavar="PATH",
                        help="consortium YAML file (default $YILIAN_CONSORTIUM or deploy/consortium.example.yaml)")

    up = sub.add_parser("up", help="run every service in one process",
                        description="Run every service (pacs_gateway, workflow, api, delivery, monitor) in one "
                                    "asyncio process. Embedded default: SQLite, files and the in-process durable "
                                    "bus under $YILIAN_DATA_DIR; set YILIAN_STORE_URL / YILIAN_BUS_URL for MongoDB "
                                    "and Kafka. Prints a JSON line {\"ready\": true, ...} when both listeners accept "
                                    "connections; stops cleanly on SIGINT/SIGTERM.",
                        epilog=ENVIRONMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    consortium_arg(up)
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one service (scale-out deployment)",
                           description="Run one service, normally against Kafka (YILIAN_BUS_URL=kafka://...) and "
                                       "MongoDB (YILIAN_STORE_URL=mongodb://...). Every process answers /healthz and "
                                       "/readyz on YILIAN_HTTP_PORT (the api's port when it runs the api).",
                           epilog=ENVIRONMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("name", choices=SERVICE_NAMES, metavar="NAME",
                       help=f"the service to run: {', '.join(SERVICE_NAMES)}")
    consortium_arg(serve)
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a bearer token for a user of the consortium",
                           description="Print a signed bearer token (JWT) for USER_ID of the loaded consortium, "
                                       "carrying the user's organisation, role and centre. It is signed with the "
                                       "running server's secret, found as the server finds it: YILIAN_JWT_SECRET, "
                                       "else $YILIAN_DATA_DIR/jwt.secret (default ./var/jwt.secret), which "
                                       "'yilian up' writes at its first start; without either it refuses.")
    token.add_argument("--user", required=True, metavar="USER_ID", help="a user id from the consortium file")
    token.add_argument("--ttl", type=_positive_seconds, default=8 * 3600, metavar="SECONDS",
                       help="lifetime, a positive number of seconds (default 28800)")
    consortium_arg(token)
    token.set_defaults(func=cmd_token)

    check = sub.add_parser("check-config", help="validate the consortium file and print a summary",
                           description="Load and validate the consortium YAML; errors name the line.")
    consortium_arg(check)
    check.set_defaults(func=cmd_check)

    audit = sub.add_parser("audit", help="the audit trail: verify its hash chain",
                           description="Commands on the audit trail in YILIAN_STORE_URL.")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser(
        "verify", help="walk the hash chain and name the first altered or missing record",
        description="Read the whole audit trail in seq order and check every record's hash and link. Prints "
                    "one JSON object (intact, records, head_seq, head_hash, unchained, first_break); exit "
                    "status 0 when intact, 1 when a record is altered or missing. Reads only.")
    consortium_arg(verify)
    verify.set_defaults(func=cmd_audit_verify)

    user = sub.add_parser("user", help="desk users: set a password",
                          description="Commands on the users of the desks (docs/desks.md), in YILIAN_STORE_URL.")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    passwd = user_sub.add_parser(
        "passwd", help="set USER's desk password (the first admin's, or anyone's)",
        description="Set the password USER signs in with at /signin: read twice from the terminal, or the first "
                    "line of standard input with --stdin. Stored as an argon2id hash in the store (never in the "
                    "consortium file); clears a sign-in lock; audited. At least 10 characters.")
    passwd.add_argument("user", metavar="USER", help="a user id of the consortium file, or one an admin created")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input (scripts)")
    consortium_arg(passwd)
    passwd.set_defaults(func=cmd_user_passwd)

    identity = sub.add_parser("identity", help="the consortium patient identity (EMPI)",
                              description="Commands on the patient identity index (docs/identity.md).")
    identity_sub = identity.add_subparsers(dest="identity_command", required=True, metavar="ACTION")
    backfill = identity_sub.add_parser(
        "backfill", help="give studies indexed before the identity existed theirs, from their stored headers",
        description="For every study without a consortium identity, read the stored headers of a few of its "
                    "instances (Other Patient IDs Sequence, Issuer of Patient ID) and set the identity on the "
                    "study and its local patient, as indexing does. Idempotent; safe beside running services. "
                    "Prints one JSON object of counts (studies_without, studies_filled, patients_filled, "
                    "unreadable); audited (identity.backfill).")
    consortium_arg(backfill)
    backfill.set_defaults(func=cmd_identity_backfill)

    from .delivery import signature_cli
    signature_cli.add_parsers(sub, consortium_arg)
    from .edge import cli as edge_cli
    edge_cli.add_parsers(sub, consortium_arg)
    return p


def main(argv: list[str] | None = None) -> int:
    restrict_new_files()  # at process start: whatever yilian writes is its user's alone
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"yilian: configuration error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # Settings and adapter choice refuse bad environment values with a message.
        print(f"yilian: configuration error: {exc.code}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
