"""A small Prometheus registry: counters, gauges, histograms, text exposition format 0.0.4.

One registry per runtime (``metrics_of(rt)``), so every service of a process shares it and
tests that build several runtimes never see each other's figures.  Samples may also come
from *collectors*: async callbacks run at scrape time (queue depths read from the monitor's
read model, bus lag), so figures that live elsewhere are never copied and never stale.
Counters may be incremented from any thread (pynetdicom handlers run on their own).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SHARED_KEY = "metrics.registry"
_PROCESS_STARTED = time.time()

# Seconds: from an HTTP call (ms) to a routine reading's turnaround (a day).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of the exposition: ``name{labels} value``."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """Samples of one metric with its HELP and TYPE (what a collector returns)."""

    name: str
    kind: str  # counter, gauge, histogram
    help: str
    samples: list[Sample]


def _key(labelnames: Sequence[str], labels: dict[str, Any]) -> Labels:
    if set(labels) != set(labelnames):
        raise ValueError(f"labels {sorted(labels)} do not match {sorted(labelnames)}")
    return tuple((n, str(labels[n])) for n in labelnames)


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._lock = threading.Lock()

    def family(self) -> Family:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = _key(self.labelnames, labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: Any) -> float:
        return self._values.get(_key(self.labelnames, labels), 0.0)

    def family(self) -> Family:
        with self._lock:
            items = list(self._values.items())
        return Family(self.name, self.kind, self.help, [Sample(self.name, dict(k), v) for k, v in items])


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: Any) -> None:
        key = _key(self.labelnames, labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        key = _key(self.labelnames, labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._values: dict[Labels, tuple[list[int], float, int]] = {}

    def observe(self, value: float, **labels: Any) -> None:
        key = _key(self.labelnames, labels)
        with self._lock:
            counts, total, n = self._values.get(key) or ([0] * len(self.buckets), 0.0, 0)
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._values[key] = (counts, total + value, n + 1)

    def family(self) -> Family:
        with self._lock:
            items = [(k, (list(c), s, n)) for k, (c, s, n) in self._values.items()]
        samples: list[Sample] = []
        for key, (counts, total, n) in items:
            samples += histogram_samples(self.name, dict(key), self.buckets, counts, total, n)
        return Family(self.name, self.kind, self.help, samples)


def histogram_samples(name: str, labels: dict[str, str], buckets: Sequence[float], cumulative: Sequence[int],
                      total: float, count: int) -> list[Sample]:
    """The ``_bucket``/``_sum``/``_count`` samples of one labelled histogram (cumulative counts)."""
    out = [Sample(f"{name}_bucket", {**labels, "le": _number(b)}, c) for b, c in zip(buckets, cumulative)]
    out.append(Sample(f"{name}_bucket", {**labels, "le": "+Inf"}, count))
    out.append(Sample(f"{name}_sum", labels, total))
    out.append(Sample(f"{name}_count", labels, count))
    return out


Collector = Callable[[], Awaitable[Iterable[Family]]]


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: dict[str, Collector] = {}
        self._lock = threading.Lock()

    def _get(self, cls: type, name: str, help: str, labelnames: Sequence[str], **kw: Any) -> Any:
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = cls(name, help, labelnames, **kw)
            elif type(metric) is not cls or metric.labelnames != tuple(labelnames):
                raise ValueError(f"metric {name} already registered as another {metric.kind}")
            return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, help, labelnames)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, help, labelnames)

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._get(Histogram, name, help, labelnames, buckets=buckets)

    def collector(self, name: str, collect: Collector) -> None:
        """Run ``collect`` at every scrape (registered once per ``name``)."""
        self._collectors[name] = collect

    async def families(self) -> list[Family]:
        out = [m.family() for m in list(self._metrics.values())]
        for collect in list(self._collectors.values()):
            out += list(await collect())
        return out

    async def exposition(self) -> str:
        return render(await self.families())

    async def as_json(self) -> dict[str, Any]:
        """The same figures as JSON: ``{name: {"type", "help", "samples": [{labels, value}]}}``."""
        return {f.name: {"type": f.kind, "help": f.help,
                         "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
                for f in await self.families()}


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Family]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for s in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
            lines.append(f"{s.name}{{{labels}}} {_number(s.value)}" if labels else f"{s.name} {_number(s.value)}")
    return "\n".join(lines) + "\n"


def metrics_of(rt: Any) -> Registry:
    """The runtime's registry (created on first use)."""
    registry = rt.shared.get(SHARED_KEY)
    if registry is None:  # setdefault: gateway threads may ask at the same moment
        registry = rt.shared.setdefault(SHARED_KEY, Registry())
    return registry


def install_runtime_collectors(rt: Any) -> Registry:
    """Figures every process has: bus lag per consumer group, services running, start time."""
    registry = metrics_of(rt)
    started = registry.gauge("yilian_process_start_time_seconds", "When this process started (epoch seconds)")
    if not started.value():
        started.set(_PROCESS_STARTED)

    async def collect() -> list[Family]:
        lag: dict[str, int] = {}
        try:
            lag = await rt.bus.lag()
        except Exception:  # noqa: BLE001 - a scrape must answer even when the bus does not
            pass
        return [Family("yilian_bus_lag_events", "gauge", "Events published but not yet acknowledged, per consumer group",
                       [Sample("yilian_bus_lag_events", {"group": g}, n) for g, n in sorted(lag.items())]),
                Family("yilian_service_up", "gauge", "Services running in this process",
                       [Sample("yilian_service_up", {"service": s.name}, 1) for s in rt.services]),
                *rt.bus.figures(),
                *(relay.figures() if (relay := rt.shared.get("outbox_relay")) is not None else ())]
    registry.collector("runtime", collect)
    return registry
