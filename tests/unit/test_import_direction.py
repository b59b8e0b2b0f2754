"""Arrows point down: core <- services.  No module of one of the five services imports another
service (its modules, or the package itself), except the pairs allowed below, each for a stated
reason; core imports no service at all (``core/runtime.py`` loads them by name).  Parsed with
``ast``, so an import hidden inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
SERVICES = ("pacs_gateway", "workflow", "api", "delivery", "monitor")

# (importing service, imported module) -> why.  The api is the HTTP entrypoint (the top layer): it
# turns requests into the other services' commands and queries.  Nothing imports the api.
ALLOWED = {
    ("api", "services.workflow"): "reading and consultation commands, execute, queries, policy (who sees what)",
    ("api", "services.delivery"): "the result inbox, acknowledgement, dead letters and redrive",
    ("api", "services.pacs_gateway"): "STOW-RS stores through the gateway's ingest; QIDO-RS matches with its "
                                      "C-FIND matching, so both answer alike",
    ("api", "services.monitor"): "the api's application serves the monitor's routes and /dashboard",
}


def _service_of(path: Path) -> str | None:
    parts = path.relative_to(SERVICES_DIR).parts
    return parts[0] if len(parts) > 1 else None


def _imports(source: str, package: list[str]) -> list[tuple[int, str]]:
    """Every module a module of ``package`` imports, absolute (``services.x.y``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]  # "from .. import monitor"
    return found


def _crossings() -> list[tuple[str, int, str, str]]:
    out = []
    for path in sorted(SERVICES_DIR.rglob("*.py")):
        owner = _service_of(path)
        if owner is None:
            continue  # services/cli.py, services/__init__.py: the composition root
        package = ["services", *path.relative_to(SERVICES_DIR).parts[:-1]]
        for line, module in _imports(path.read_text("utf-8"), package):
            parts = module.split(".")
            if len(parts) < 2 or parts[0] != "services" or parts[1] not in SERVICES:
                continue
            target = parts[1]
            if owner == "core" or (owner in SERVICES and target != owner):
                out.append((str(path.relative_to(SERVICES_DIR.parent)), line, owner, f"services.{target}"))
    return out


def test_no_service_imports_another_but_the_allowed():
    unexplained = sorted({c for c in _crossings() if (c[2], c[3]) not in ALLOWED})
    assert unexplained == [], "\n".join(f"{f}:{line}: {owner} imports {target}" for f, line, owner, target
                                         in unexplained)


def test_the_allowlist_is_still_needed():
    used = {(owner, target) for _, _, owner, target in _crossings()}
    assert set(ALLOWED) <= used, f"no longer needed, remove: {set(ALLOWED) - used}"


def test_the_check_sees_relative_hidden_and_package_imports():
    source = ("def f():\n    from ..api.context import runtime\n"
              "from .. import workflow\nimport services.delivery.retry\nfrom ...core import http\n")
    modules = {m for _, m in _imports(source, ["services", "monitor", "sub"])}
    assert {"services.monitor.api.context", "services.monitor.workflow", "services.delivery.retry",
            "services.core.http"} <= modules
    modules = {m for _, m in _imports(source, ["services", "monitor"])}
    assert {"services.api.context", "services.workflow"} <= modules
