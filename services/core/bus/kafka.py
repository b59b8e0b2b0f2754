"""The Kafka bus: aiokafka producer and one consumer per consumer group.

``kafka://host:9092[,host2:9092][?partitions=6&replication=1&prefix=site1.]``

* topic of an event = ``topic_of(event.type)`` (``yilian.instance``); key = the event
  subject, so one study's or request's events keep their order on one partition; value =
  the CloudEvents JSON; headers ``ce_type`` and ``ce_id``.
* consumers commit after each handled message (at least once; handlers are idempotent) and
  share :func:`.consumer.handle` with the embedded bus, so retries and dead letters behave
  the same.  Records that are not valid envelopes are dead-lettered, never dropped.
* ``prefix`` namespaces topics and consumer groups, so several deployments (or tests) can
  share one cluster.
* partition counts are checked at start and after every outage or failed publish: too few
  are added or refused (:class:`.port.TopicMismatch`); a topic re-created under the bus makes
  its consumers join again and the relay publish again what the broker lost.
* a broker outage is logged once at each end (:mod:`.outage`), its client noise counted.

Events emitted in store transactions reach Kafka through :class:`.relay.OutboxRelay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError

from ..events import Event, InvalidEvent, utc_now
from ..store.port import DuplicateKey, Store
from .consumer import handle
from .outage import OUTAGE
from .port import DEAD_LETTER_TOPIC, Bus, BusUnavailable, RetryPolicy, Subscription, TopicMismatch, topic_of

log = logging.getLogger("yilian.bus")

TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
METADATA_MAX_AGE_MS = 5000  # producers and consumers notice a topic re-created after a broker restart


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """What a ``kafka://`` URL says."""

    bootstrap: tuple[str, ...]
    partitions: int = 6
    replication: int = 1
    prefix: str = ""
    session_timeout_ms: int = 10_000

    @classmethod
    def from_url(cls, url: str) -> KafkaConfig:
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ValueError(f"bus URL must look like kafka://host:9092[,host2:9092], got {url!r}")
        hosts = tuple(h.strip() for h in parts.netloc.split(",") if h.strip())
        for host in hosts:
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"bus URL {url!r}: {host!r} is not host:port")
        query = parse_qs(parts.query)
        unknown = set(query) - {"partitions", "replication", "prefix", "session_timeout_ms"}
        if unknown:
            raise ValueError(f"bus URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")

        def positive(name: str, default: int) -> int:
            raw = query.get(name, [str(default)])[0]
            if not raw.isdigit() or int(raw) < 1:
                raise ValueError(f"bus URL {url!r}: {name} must be a positive integer, got {raw!r}")
            return int(raw)
        return cls(hosts, partitions=positive("partitions", 6), replication=positive("replication", 1),
                   prefix=query.get("prefix", [""])[0],
                   session_timeout_ms=positive("session_timeout_ms", 10_000))

    @property
    def servers(self) -> str:
        return ",".join(self.bootstrap)


class KafkaBus(Bus):
    def __init__(self, url: str, *, store: Store, validate: Callable[[Event], None], idempotent: bool = True,
                 retry: RetryPolicy | None = None, timeout: float = 10.0, poll_ms: int = 200) -> None:
        super().__init__()
        self.config = KafkaConfig.from_url(url)
        self.store = store
        self._validate = validate
        # Tansu (the test broker) lacks the idempotent-producer handshake; real Kafka has it.
        self.idempotent = idempotent
        self.retry = retry or RetryPolicy()
        self.timeout = timeout  # bound on any one broker operation, so nothing hangs forever
        self.poll_ms = poll_ms
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._ready_topics: set[str] = set()  # checked since the last failure
        self._partitions: dict[str, int] = {}  # topic -> partitions when last checked
        self._lost_topics: set[str] = set()  # re-created since: the broker lost their records
        self._consumers: dict[str, AIOKafkaConsumer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # consumer group -> its consuming task
        self._renewal: asyncio.Task[None] | None = None
        self._producer_stale = False  # an outage began since the producer read its metadata
        self._stopping = False
        self._stopped = False  # after stop(), publish() uses a one-shot producer (nothing left open)

    # --- names ---------------------------------------------------------------------
    def topic(self, event_type: str) -> str:
        return self.config.prefix + topic_of(event_type)

    @property
    def dead_letter_topic(self) -> str:
        return self.config.prefix + DEAD_LETTER_TOPIC

    def group_id(self, group: str) -> str:
        return self.config.prefix + group

    def _groups(self) -> dict[str, list[Subscription]]:
        groups: dict[str, list[Subscription]] = {}
        for sub in self.subscriptions:
            groups.setdefault(sub.group, []).append(sub)
        return groups

    def _topics_of(self, subs: Iterable[Subscription]) -> list[str]:
        return sorted({self.topic(t) for sub in subs for t in sub.types})

    # --- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._stopped = False
        OUTAGE.attach(self.ping, self._after_outage, self._outage_began)
        groups = self._groups()
        await self._ensure_topics([self.dead_letter_topic, *self._topics_of(self.subscriptions)])
        for group, subs in groups.items():
            try:
                await self._start_group(group, subs)
            except BusUnavailable:
                await self.stop()
                raise

    async def _start_group(self, group: str, subs: list[Subscription]) -> None:
        consumer = self._consumer(group)
        try:
            await asyncio.wait_for(consumer.start(), self.timeout)
            # Subscribing after start joins the group in the background: a rebalance
            # (other members, a restarted broker) must not make start() time out.
            consumer.subscribe(self._topics_of(subs))
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise BusUnavailable(f"kafka {self.config.servers}: consumer group {group!r} "
                                 f"could not start: {exc!r}") from exc
        self._consumers[group] = consumer
        self._tasks[group] = asyncio.create_task(self._consume(group, subs, consumer), name=f"consume:{group}")

    async def _stop_group(self, group: str) -> None:
        consumer = self._consumers.pop(group, None)
        task = self._tasks.pop(group, None)
        if task is not None:
            # A consumer finishes and commits the message in hand; give it a moment, then cancel.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=self.timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_leave_generation_zero(consumer), self.timeout)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self.timeout)

    async def _renew_consumers(self, topics: set[str]) -> None:
        """The consumers of re-created topics join their groups again, with fresh metadata.

        aiokafka keeps a member's assignment when a topic's partition count changes under it
        (seen with Tansu: a topic re-created with 4 partitions instead of 2, the members kept
        reading 0 and 1), so records keyed to the new partitions would never be read."""
        for group, subs in self._groups().items():
            if group not in self._consumers or not set(self._topics_of(subs)) & topics:
                continue
            log.warning("kafka consumer group joins again after its topics were re-created",
                        extra={"group": group, "topics": sorted(set(self._topics_of(subs)) & topics)})
            await self._stop_group(group)
            failures = 0
            while not self._stopping:
                try:
                    await self._start_group(group, subs)
                    break
                except BusUnavailable as exc:
                    failures += 1
                    OUTAGE.quiet(log, "kafka consumer group could not join again, retrying",
                                 {"group": group, "reason": str(exc)})
                    await asyncio.sleep(self.retry.backoff(failures))

    def _consumer(self, group: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.config.servers, group_id=self.group_id(group),
            enable_auto_commit=False, auto_offset_reset="earliest",
            request_timeout_ms=int(self.timeout * 1000),
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.config.session_timeout_ms // 5),
            # Re-read metadata often enough to notice topics re-created after a broker restart.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            # Tansu answers a fetch when its wait expires, not when records arrive: bound the latency.
            fetch_max_wait_ms=100)

    async def stop(self) -> None:
        self._stopping = True
        self._stopped = True
        OUTAGE.detach(self.ping, self._after_outage, self._outage_began)
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None
        for group in list(self._tasks):
            await self._stop_group(group)
        async with self._producer_lock:
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._producer.stop(), self.timeout)
                self._producer = None

    # --- admin ---------------------------------------------------------------------
    async def _admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.servers,
                                    request_timeout_ms=int(self.timeout * 1000))
        try:
            await asyncio.wait_for(admin.start(), self.timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await admin.close()
            raise
        return admin

    async def _ensure_topics(self, topics: Iterable[str]) -> None:
        """Create missing topics with the configured partitions (auto-creation would use the broker's),
        and check those that exist: fewer partitions than configured are added where the broker
        allows it, else refused (:class:`TopicMismatch`); a topic that was re-created since the
        last check (gone, or another partition count) has lost its records (:meth:`take_lost_topics`)
        and its consumers join again."""
        missing = sorted(set(topics) - self._ready_topics)
        if not missing:
            return
        try:
            admin = await self._admin()
            try:
                response = await asyncio.wait_for(admin.create_topics(
                    [NewTopic(t, num_partitions=self.config.partitions,
                              replication_factor=self.config.replication) for t in missing]), self.timeout)
                for topic, code, *rest in response.topic_errors:
                    if code not in (0, TOPIC_EXISTS):
                        raise BusUnavailable(f"kafka {self.config.servers}: creating topic {topic!r} failed "
                                             f"with error {code}: {rest[0] if rest else ''}")
                created = {topic for topic, code, *_ in response.topic_errors if code == 0}
                counts = {t: self.config.partitions for t in created}
                existing = sorted(set(missing) - created)
                if existing:  # described only now: Tansu creates a topic a metadata request names
                    counts |= await self._partition_counts(admin, existing)
                self._topics_changed({t for t in missing if t in self._partitions and (
                    t in created or counts[t] != self._partitions[t])}, counts)
                for topic in existing:
                    if counts[topic] < self.config.partitions:
                        counts[topic] = await self._add_partitions(admin, topic, counts[topic])
                    elif counts[topic] > self.config.partitions and topic not in self._partitions:
                        log.warning("kafka topic has more partitions than the bus URL says; used as it is", extra={
                            "topic": topic, "partitions": counts[topic], "configured": self.config.partitions})
                    self._partitions[topic] = counts[topic]
                self._partitions |= {t: counts[t] for t in created}
            finally:
                await admin.close()
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            raise BusUnavailable(f"kafka {self.config.servers}: cannot create topics {missing}: {exc!r}") from exc
        self._ready_topics.update(missing)

    def _topics_changed(self, changed: set[str], counts: dict[str, int]) -> None:
        """Topics re-created since the last check: the outbox publishes their events again, and
        their consumers join again (with fresh metadata)."""
        if not changed:
            return
        for topic in sorted(changed):
            log.warning("kafka topic was re-created: the broker lost its records, the outbox publishes them again",
                        extra={"topic": topic, "partitions_before": self._partitions[topic],
                               "partitions": counts[topic]})
            self._partitions[topic] = counts[topic]
        self._lost_topics |= changed
        if self._consumers and not self._stopping and (self._renewal is None or self._renewal.done()):
            self._renewal = asyncio.create_task(self._renew_consumers(changed), name="kafka-rejoin")

    async def _partition_counts(self, admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
        described = await asyncio.wait_for(admin.describe_topics(topics), self.timeout)
        counts = {d["topic"]: len(d.get("partitions") or ()) for d in described if not d.get("error_code")}
        unknown = sorted(set(topics) - set(counts))
        if unknown:
            raise BusUnavailable(f"kafka {self.config.servers}: cannot describe topics {unknown}")
        return counts

    async def _add_partitions(self, admin: AIOKafkaAdminClient, topic: str, have: int) -> int:
        want = self.config.partitions
        try:
            await asyncio.wait_for(admin.create_partitions({topic: NewPartitions(want)}), self.timeout)
        except (KafkaError, asyncio.TimeoutError) as exc:
            raise TopicMismatch(
                f"kafka {self.config.servers}: topic {topic!r} has {have} partition(s) where the bus URL says "
                f"partitions={want}, and the broker could not add partitions ({exc!r}); re-create the topic "
                f"with {want} partitions, or set partitions={have} in YILIAN_BUS_URL on every process") from exc
        log.warning("kafka topic had fewer partitions than the bus URL says; partitions added",
                    extra={"topic": topic, "partitions_before": have, "partitions": want})
        return want

    def take_lost_topics(self) -> set[str]:
        lost, self._lost_topics = self._lost_topics, set()
        return lost

    async def ping(self) -> None:
        timeout = min(self.timeout, 1.5)  # under the 2 s readiness probe, so its message survives
        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.servers, request_timeout_ms=int(timeout * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout)  # bootstraps with a metadata request
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            raise BusUnavailable(f"kafka {self.config.servers} unreachable: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    # --- publishing ----------------------------------------------------------------
    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.servers, acks="all", enable_idempotence=self.idempotent,
            request_timeout_ms=int(self.timeout * 1000), linger_ms=1,
            # aiokafka's default is 300 s: records for a topic re-created with fewer partitions
            # would go to partitions nobody consumes (the producer is also renewed after a failure).
            metadata_max_age_ms=METADATA_MAX_AGE_MS)
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise BusUnavailable(f"kafka {self.config.servers} unreachable: {exc!r}") from exc
        return producer

    async def _producer_started(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                self._producer = await self._new_producer()
            return self._producer

    async def publish(self, *events: Event) -> None:
        for event in events:
            self._validate(event)
        if not events:
            return
        topics = sorted({self.topic(e.type) for e in events})
        try:
            await self._ensure_topics(topics)
            if self._producer_stale:
                await self._forget_broker_state()
                await self._ensure_topics(topics)
            if self._stopped:
                producer = await self._new_producer()
                try:
                    await asyncio.wait_for(self._send(producer, events), self.timeout)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), self.timeout)
            else:
                producer = await self._producer_started()
                await asyncio.wait_for(self._send(producer, events), self.timeout)
        except BusUnavailable:
            await self._forget_broker_state()
            raise
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            # The broker may have lost its topics (restart): check them again next time, with a
            # producer whose metadata is fresh.
            await self._forget_broker_state()
            what = (f"not acknowledged within {self.timeout:g}s" if isinstance(exc, asyncio.TimeoutError)
                    else "not published")
            raise BusUnavailable(f"kafka {self.config.servers}: {len(events)} event(s) to {', '.join(topics)} "
                                 f"{what}: {exc!r}") from exc

    async def _send(self, producer: AIOKafkaProducer, events: Iterable[Event]) -> None:
        pending = [await producer.send(self.topic(e.type), value=e.to_json().encode(), key=e.subject.encode(),
                                       headers=[("ce_type", e.type.encode()), ("ce_id", e.id.encode())])
                   for e in events]
        await asyncio.gather(*pending)

    # --- consuming -----------------------------------------------------------------
    async def _consume(self, group: str, subs: list[Subscription], consumer: AIOKafkaConsumer) -> None:
        failures = 0  # consecutive failed fetches, or batches stalled on a record
        while not self._stopping and self._consumers.get(group) is consumer:
            try:
                batch = await consumer.getmany(timeout_ms=self.poll_ms, max_records=100)
            except KafkaError as exc:  # the broker may come back
                failures += 1
                OUTAGE.quiet(log, "kafka fetch failed", {"group": group, "reason": repr(exc)})
                await asyncio.sleep(self.retry.backoff(failures))
                continue
            stalled = False
            for tp, records in batch.items():
                for record in records:
                    if self._stopping or tp not in consumer.assignment():
                        break  # not committed: redelivered to whoever owns the partition next
                    try:
                        await self._handle_record(group, subs, record)
                    except Exception:  # noqa: BLE001 - e.g. the store is down while dead-lettering
                        log.exception("kafka record not dealt with, will read it again", extra={
                            "group": group, "topic": tp.topic, "partition": tp.partition, "offset": record.offset})
                        consumer.seek(tp, record.offset)  # nothing after it is skipped either
                        stalled = True
                        break
                    await self._commit(group, consumer, tp, record.offset + 1)
            failures = failures + 1 if stalled else 0
            if stalled:
                await asyncio.sleep(self.retry.backoff(failures))

    @staticmethod
    async def _commit(group: str, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except KafkaError as exc:
            # The partition moved to another member (or the broker is away): it is read again.
            OUTAGE.quiet(log, "kafka commit failed", {"group": group, "topic": tp.topic, "offset": offset,
                                                      "reason": repr(exc)})

    async def _handle_record(self, group: str, subs: list[Subscription], record) -> None:
        headers = {k: v for k, v in (record.headers or ())}
        ce_type = headers.get("ce_type", b"").decode("utf-8", "replace")
        wanted = {t for sub in subs for t in sub.types}
        if ce_type and ce_type not in wanted:
            return  # another event kind sharing the topic
        try:
            event = Event.from_json(record.value or b"")
        except InvalidEvent as exc:
            log.error("kafka record is not an event envelope", extra={
                "group": group, "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "reason": str(exc)})
            await self._dead_letter(self._raw_letter(group, record, ce_type, f"invalid: {exc}"), raw=record.value)
            return
        for sub in subs:
            if event.type in sub.types:
                await handle(sub, event, validate=self._validate, retry=self.retry, dead_letter=self._dead_letter)

    @staticmethod
    def _raw_letter(group: str, record, ce_type: str, reason: str) -> dict:
        """A dead letter (shape of ``consumer._letter``) for a record that is not an envelope."""
        raw = (record.value or b"").decode("utf-8", "replace")
        return {"id": f"{group}|{record.topic}:{record.partition}:{record.offset}", "group": group,
                "type": ce_type or None, "subject": (record.key or b"").decode("utf-8", "replace"),
                "reason": reason, "attempts": 0, "trace": "", "time": utc_now(),
                "envelope": {"raw": raw, "topic": record.topic, "partition": record.partition,
                             "offset": record.offset}}

    async def _dead_letter(self, letter: dict, *, raw: bytes | None = None) -> None:
        """Keep the letter in the store (durable, queryable), then copy it to the dead-letter topic."""
        async with self.store.transaction() as tx:
            try:
                await tx.insert("dead_letters", letter)
            except DuplicateKey:
                pass
        value = raw if raw is not None else json.dumps(letter["envelope"], ensure_ascii=False).encode()
        headers = [("reason", letter["reason"].encode()[:4000]), ("group", letter["group"].encode())]
        if letter.get("type"):
            headers.append(("ce_type", letter["type"].encode()))
        if isinstance(letter["envelope"].get("id"), str):
            headers.append(("ce_id", letter["envelope"]["id"].encode()))
        try:
            await self._ensure_topics([self.dead_letter_topic])
            producer = await self._producer_started()
            await asyncio.wait_for(producer.send_and_wait(
                self.dead_letter_topic, value=value, key=(letter.get("subject") or "").encode(), headers=headers),
                self.timeout)
        except (BusUnavailable, KafkaError, OSError, asyncio.TimeoutError) as exc:
            log.error("dead letter kept in the store only", extra={"id": letter["id"], "reason": repr(exc)})

    def _outage_began(self) -> None:
        """The broker may come back without its topics: check them, with a new producer, first."""
        self._ready_topics.clear()
        self._producer_stale = True

    async def _forget_broker_state(self) -> None:
        """Check topics again before the next publish, and drop the producer with its metadata."""
        self._ready_topics.clear()
        async with self._producer_lock:
            producer, self._producer = self._producer, None
            self._producer_stale = False
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self.timeout)

    async def _after_outage(self) -> None:
        """The broker answers again: it may have lost its topics, or re-created them differently."""
        await self._forget_broker_state()
        if not self._stopping:
            try:
                await self._ensure_topics(self._partitions)
            except BusUnavailable as exc:
                log.error("kafka topics after the outage", extra={"reason": str(exc)})

    # --- monitoring ----------------------------------------------------------------
    def figures(self) -> list:
        return OUTAGE.figures()

    def assignment(self, group: str) -> list[tuple[str, int]]:
        """The (topic, partition) pairs this process consumes for ``group`` right now."""
        consumer = self._consumers.get(group)
        return sorted((tp.topic, tp.partition) for tp in consumer.assignment()) if consumer else []

    async def lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for group, subs in self._groups().items():
            consumer = self._consumers.get(group)
            temporary = consumer is None
            if temporary:
                consumer = AIOKafkaConsumer(bootstrap_servers=self.config.servers, group_id=self.group_id(group),
                                            enable_auto_commit=False, request_timeout_ms=int(self.timeout * 1000))
            try:
                if temporary:
                    await asyncio.wait_for(consumer.start(), self.timeout)
                out[group] = await asyncio.wait_for(self._group_lag(consumer, self._topics_of(subs)), self.timeout)
            except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                raise BusUnavailable(f"kafka {self.config.servers}: lag of group {group!r}: {exc!r}") from exc
            finally:
                if temporary:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
        return out

    @staticmethod
    async def _group_lag(consumer: AIOKafkaConsumer, topics: list[str]) -> int:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not partitions:
            return 0
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        total = 0
        for tp in partitions:
            committed = await consumer.committed(tp)
            total += max(0, ends[tp] - (starts[tp] if committed is None else committed))
        return total


async def _leave_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """Leave the group explicitly when its generation is 0.

    aiokafka sends LeaveGroup only for generations > 0 (Kafka numbers them from 1); Tansu
    numbers them from 0, so without this the next member waits a whole session timeout.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", -1) != 0:
        return
    from aiokafka.protocol.group import LeaveGroupRequest
    await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
