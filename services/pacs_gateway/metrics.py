"""Gateway plugin: count every final DIMSE response the node sends, by command and status.

Bound to pynetdicom's ``EVT_DIMSE_SENT`` notification, so no service handler changes;
the figures appear as ``yilian_dimse_responses_total`` at ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt

from ..monitor.instruments import count_dimse_response, dimse_counter


def install(gateway: Any) -> list[tuple[Any, Any]]:
    dimse_counter(gateway.rt)  # declared at start, so /metrics lists it before the first association

    def on_sent(event: evt.Event) -> None:
        command = getattr(event.message, "command_set", None)
        status = getattr(command, "Status", None) if command is not None else None
        if status is not None:  # responses only: requests carry no Status
            count_dimse_response(gateway.rt, int(command.CommandField), int(status))
    return [(evt.EVT_DIMSE_SENT, on_sent)]
