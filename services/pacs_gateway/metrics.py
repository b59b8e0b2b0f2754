"""Gateway plugin: what ``/metrics`` shows of the DICOM node.

* ``yilian_dimse_responses_total``: every final DIMSE response, by command and status (bound to
  pynetdicom's ``EVT_DIMSE_SENT``; the native upper layer counts its own);
* ``yilian_gateway_unindexed_instances``: instances answered (durable in the journal) and not
  indexed yet — milliseconds' worth normally; a figure that grows means the store is away;
* ``yilian_gateway_indexing_failures_total`` and ``yilian_gateway_quarantined_total``.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt

from ..core.metrics import Family, Sample, metrics_of
from ..core.instruments import count_dimse_response, dimse_counter


def install(gateway: Any) -> list[tuple[Any, Any]]:
    dimse_counter(gateway.rt)  # declared at start, so /metrics lists it before the first association

    async def indexing() -> list[Family]:
        indexer = gateway.ingest.indexer
        if indexer is None:
            return []
        stats = indexer.stats()
        return [Family("yilian_gateway_unindexed_instances", "gauge",
                       "instances answered (durable in the ingest journal) and not indexed yet",
                       [Sample("yilian_gateway_unindexed_instances", {}, stats["waiting"])]),
                Family("yilian_gateway_indexing_failures_total", "counter",
                       "indexer batches that failed and were retried",
                       [Sample("yilian_gateway_indexing_failures_total", {}, stats["failures"])]),
                Family("yilian_gateway_quarantined_total", "counter",
                       "acknowledged instances the index could not take, set aside in quarantine",
                       [Sample("yilian_gateway_quarantined_total", {}, stats["quarantined"])])]
    metrics_of(gateway.rt).collector("pacs_gateway.indexer", indexing)

    def on_sent(event: evt.Event) -> None:
        command = getattr(event.message, "command_set", None)
        status = getattr(command, "Status", None) if command is not None else None
        if status is not None:  # responses only: requests carry no Status
            count_dimse_response(gateway.rt, int(command.CommandField), int(status))
    return [(evt.EVT_DIMSE_SENT, on_sent)]
