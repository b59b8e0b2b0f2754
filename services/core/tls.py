"""DICOM TLS client side (PS3.15 B.1): the context for associations Yilian opens to peers; and
the HTTP API's own TLS (``YILIAN_HTTP_TLS_CERT``/``_KEY``: the desks' cookies are then ``Secure``).

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


def server_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """HTTPS for the api when a certificate and key are configured (TLS 1.2 at least); None otherwise."""
    if not cert or not key:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
