"""The bus port: publish events, consume them as a named consumer group.

Delivery is at least once.  A handler *acknowledges* an event by returning; the bus then
commits the group's position.  A handler that raises is retried with exponential backoff
(``max_attempts``), then the event is dead-lettered with the reason and the group moves
on.  An event that fails its schema on consume is dead-lettered at once.  Handlers must be
idempotent: use ``Transaction.first_time(group, event.id)`` in the transaction that
applies the effect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..events import Event

Handler = Callable[[Event], Awaitable[None]]

# Kafka topics group event types by their first word; one study's or request's events share
# a partition because the partition key is the event subject.
TOPIC_PREFIX = "yilian."
DEAD_LETTER_TOPIC = "yilian.dead_letter"


# ``bus.probe`` is the tests' and benchmarks' event: no service sends or reads it.
PROBE_FAMILY = "bus"


def topic_of(event_type: str) -> str:
    """``instance.stored`` -> ``yilian.instance``."""
    return TOPIC_PREFIX + event_type.split(".", 1)[0]


def deployment_topics(event_types: Iterable[str]) -> list[str]:
    """The topics a deployment needs: one per event family (of the schemas' types), then dead letters."""
    families = {t.split(".", 1)[0] for t in event_types} - {PROBE_FAMILY}
    return [*sorted(TOPIC_PREFIX + f for f in families), DEAD_LETTER_TOPIC]


class BusUnavailable(Exception):
    """The broker cannot be reached; the event was not published."""


class TopicMismatch(BusUnavailable):
    """A topic on the broker does not fit the configuration (too few partitions, not fixable)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    group: str
    types: tuple[str, ...]
    handler: Handler = field(compare=False)


@dataclass(slots=True)
class RetryPolicy:
    max_attempts: int = 5
    first_backoff: float = 0.05
    max_backoff: float = 5.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.first_backoff * (2 ** (attempt - 1)))


class Bus(ABC):
    def __init__(self) -> None:
        self.subscriptions: list[Subscription] = []

    def subscribe(self, group: str, types: Sequence[str], handler: Handler) -> None:
        """Register ``handler`` for ``types`` in consumer ``group``; call before :meth:`start`."""
        self.subscriptions.append(Subscription(group, tuple(types), handler))

    @abstractmethod
    async def start(self) -> None:
        """Begin consuming for every subscription."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop consuming after the events in hand are handled and acknowledged."""

    @abstractmethod
    async def publish(self, *events: Event) -> None:
        """Validate and publish; raise ``InvalidEvent`` or :class:`BusUnavailable`."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`BusUnavailable` unless the bus can take events."""

    @abstractmethod
    async def lag(self) -> dict[str, int]:
        """Events published but not yet acknowledged, per consumer group."""

    def topic(self, event_type: str) -> str:
        """Where events of ``event_type`` go."""
        return topic_of(event_type)

    def take_lost_topics(self) -> set[str]:
        """Topics whose records the broker lost since the last call (the outbox publishes them again)."""
        return set()

    def figures(self) -> list:
        """Metric families of the bus itself (``core.metrics.Family``), read at every scrape."""
        return []

    @property
    def relays_outbox(self) -> bool:
        """Whether events emitted in store transactions must be relayed to this bus."""
        return True
