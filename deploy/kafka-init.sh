#!/bin/sh
# One-shot: create Yilian's Kafka topics before any service starts.
# A topic per first word of the event types in schemas/events (services/core/bus/port.py:
# deployment_topics), except bus.probe's (tests only), plus the dead-letter topic.  Partitioned so one consumer group scales out;
# events are keyed by subject, so one study's or request's events stay in order.
set -eu
BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
PARTITIONS="${KAFKA_TOPIC_PARTITIONS:-6}"
REPLICATION="${KAFKA_REPLICATION_FACTOR:-1}"
SCHEMAS="${SCHEMAS_DIR:-/schemas/events}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"

topics=$(for f in "$SCHEMAS"/*.v*.json; do
  [ -e "$f" ] || continue
  b=$(basename "$f"); [ "${b%%.*}" = bus ] || echo "yilian.${b%%.*}"
done | sort -u)
[ -n "$topics" ] || { echo "no event schemas under $SCHEMAS" >&2; exit 1; }

# Wait for the broker (the compose healthcheck already did; this covers other orchestrators).
i=0
until "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 60 ] || { echo "kafka at $BOOTSTRAP not reachable" >&2; exit 1; }
  sleep 2
done

for topic in $topics yilian.dead_letter; do
  "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION"
done
echo "topics ready:" $topics yilian.dead_letter
