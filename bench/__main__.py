"""``python -m bench [NAME ...]`` (``make bench``): run benchmarks, print tables and ratios."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {"ingest": "bench.ingest", "worklist": "bench.worklist", "delivery": "bench.delivery",
              "orders": "bench.orders", "pdf": "bench.pdf", "desks": "bench.desks",
              "edge": "bench.edge"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default all)")
    p.add_argument("--quick", action="store_true", help="smaller corpora, one repetition (a smoke run)")
    args, rest = p.parse_known_args(argv)
    for name in args.names or list(BENCHMARKS):
        module = importlib.import_module(BENCHMARKS[name])
        rc = module.main((["--quick"] if args.quick else []) + rest)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
