"""The webhooks' HMAC secrets: from the environment variable each organisation's
``webhook.secret_env`` names; in the embedded default, generated once under the data dir
when that variable is not set (like the JWT secret), so a webhook never dead-letters a
result for want of a secret.  A scale-out deployment must set every one: its processes
would each make their own.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..core.consortium import Consortium
from ..core.settings import Settings, generated_secret

log = logging.getLogger("yilian.delivery")

DIRECTORY = "webhook-secrets"


def path_of(settings: Settings, secret_env: str) -> Path:
    return settings.data_dir / DIRECTORY / secret_env


def webhook_secret(settings: Settings, secret_env: str) -> str | None:
    """The secret, or None when the variable is unset outside the embedded default."""
    value = os.environ.get(secret_env)
    if value:
        return value
    if settings.embedded:
        return generated_secret(path_of(settings, secret_env))
    return None


def check(consortium: Consortium, settings: Settings) -> None:
    """At start: every webhook has its secret; in the embedded default a missing one is made
    and where to find it logged, otherwise the process stops naming the variable."""
    for org in consortium.organizations.values():
        if org.webhook is None or os.environ.get(org.webhook.secret_env):
            continue
        if not settings.embedded:
            raise SystemExit(f"delivery: organisation {org.id!r} has a webhook but {org.webhook.secret_env} "
                             "(its HMAC secret) is not set; set it in every delivery process, or remove the "
                             "webhook from the consortium file")
        path = path_of(settings, org.webhook.secret_env)
        fresh = not path.exists()
        webhook_secret(settings, org.webhook.secret_env)
        log.warning("webhook secret not set; using the one generated under the data directory (give it to the "
                    "clinic's receiver, or set the variable)", extra={
                        "organization": org.id, "secret_env": org.webhook.secret_env, "path": str(path),
                        "generated_now": fresh})
