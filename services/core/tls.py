"""DICOM TLS client side (PS3.15 B.1): the context for associations Yilian opens to peers.

Used wherever the gateway or delivery connects to an organisation's ``scp`` that says
``tls: true`` (result delivery, C-MOVE destinations).  The server side is
``pacs_gateway.scp.server_ssl_context``.
"""

from __future__ import annotations

import ssl


def client_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """Verify the peer against ``ca`` (the system store when unset); present our certificate if configured."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # clinics' SCPs are addressed by IP; the CA is ours
    if cert and key:
        context.load_cert_chain(cert, key)
    return context
