"""``yilian edge`` (run the township edge) and ``yilian edge status`` (ask the running one)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

EDGE_HELP = """\
environment (besides the usual YILIAN_DATA_DIR, YILIAN_CONSORTIUM, YILIAN_DICOM_PORT, YILIAN_AE_TITLE, YILIAN_HTTP_PORT):
  YILIAN_EDGE_CENTRE_URL     the centre, https://… (required)
  YILIAN_EDGE_TOKEN          the edge's bearer token: a user of role edge of its organisation (required)
  YILIAN_EDGE_ORGANIZATION   the clinic this edge serves (required)
  YILIAN_EDGE_CA_FILE        CA bundle that verifies the centre's certificate (default: the system's)
  YILIAN_EDGE_RATE_KBPS      bandwidth cap on the uplink, kbit/s (default 0: none)
  YILIAN_EDGE_BATCH_BYTES    largest STOW request (default 4 MiB)
  YILIAN_EDGE_RETRY_FIRST_SECONDS, YILIAN_EDGE_RETRY_MAX_SECONDS  backoff through outages (2 s, 60 s)
  YILIAN_EDGE_POLL_SECONDS   how often new local studies are looked for (default 1)
  YILIAN_EDGE_HEARTBEAT_SECONDS  heartbeat to the centre (default 30)
  YILIAN_EDGE_WORKLIST_SECONDS   how often the worklist copy is synced with the centre (default 60)
  YILIAN_EDGE_COMPRESS       gzip on the wire (default true)
  YILIAN_EDGE_TERMINAL       the clinic's terminal for results, AE@host:port (default: the organisation's scp)
  YILIAN_EDGE_RESULTS_RETRY_MAX_SECONDS  longest wait to reconnect the result stream or retry a result (10)
  YILIAN_EDGE_TERMINAL_TIMEOUT_SECONDS   association and C-STORE timeout at the terminal (30)
See docs/edge.md.
"""


def cmd_edge(args: argparse.Namespace) -> int:
    from ..core import logs
    from ..core.settings import Settings
    from .service import run_edge
    from .settings import EdgeSettings
    if getattr(args, "edge_command", None) == "status":
        return cmd_status(args)
    settings = Settings.from_env(consortium=args.consortium)
    edge = EdgeSettings.from_env()
    logs.configure(settings.log_level)

    def ready(rt: Any, gateway: Any, service: Any) -> None:
        print(json.dumps({"ready": True, "edge": edge.organization, "dicom_port": gateway.dicom_port,
                          "http_port": service.port, "ae_title": rt.settings.ae_title}), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_edge(settings, edge, ready=ready, stop=stop)

    asyncio.run(main())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..core.settings import Settings
    port = Settings.from_env(consortium=args.consortium).http_port
    url = f"http://127.0.0.1:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(f"yilian edge status: no edge answers at {url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(status, ensure_ascii=False, indent=2))
    return 0


def add_parsers(sub: Any, consortium_arg: Any) -> None:
    edge = sub.add_parser("edge", help="run the township edge (前置机), or show its status",
                          description="Run the township edge: a local DICOM node for the clinic's modalities "
                                      "(Success once the instance is durable here), a durable forward queue to the "
                                      "centre over HTTPS (STOW-RS, resumable, bandwidth-capped), the clinic's "
                                      "results back to its terminal (C-STORE, once), and a status page on "
                                      "YILIAN_HTTP_PORT. 'yilian edge status' asks the running edge.",
                          epilog=EDGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    edge_sub = edge.add_subparsers(dest="edge_command", metavar="ACTION")
    status = edge_sub.add_parser("status", help="print the running edge's queue: depth, bytes pending, rate, "
                                                "last success, per-study progress; results pending and delivered")
    consortium_arg(status)
    consortium_arg(edge)
    edge.set_defaults(func=cmd_edge)
