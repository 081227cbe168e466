"""Scenarios as plain data: who publishes on which topic, who subscribes to which filters.

A scenario is only a topology. Turning it into a `Plan` up front (every publisher's topic, every
subscriber's filters, and for each publisher how many subscribers match its topic) gives the
expected delivery count without asking the broker anything, and lets `--procs` hand each
load-generator process a self-contained slice of clients.

All topics live under `culex-bench/<run id>/`, so two benchmarks against the same broker, or a
retained message left by someone else, cannot leak into the figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

SCENARIOS: dict[str, str] = {
    "pubsub": "1 publisher -> 1 subscriber, one topic",
    "fanout": "1 publisher -> N subscribers (--subscribers, default 100), one topic",
    "fanin": "N publishers (--publishers, default 100) on N topics -> 1 subscriber to all N",
    "pairs": "N publishers -> N subscribers, N distinct topics (default 100)",
    "hot": "N publishers (default 100) on ONE topic -> 1 subscriber (or --subscribers N)",
    "spread": "N publishers (default 100) each on its own topic -> 1 wildcard (#) subscriber",
    "sizes": "pubsub with a 100 B and a 10 KB payload: two result rows",
    "conns": "N idle connections (--clients, default 1000): connect rate, broker memory",
}
SIZES_PAYLOADS = (100, 10 * 1024)


class PlanError(Exception):
    """Options that do not fit the scenario; reported as a one-line usage error."""


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    index: int  # global, carried in every payload stamp
    topic: str
    fanout: int  # subscribers whose filters match `topic`: expected deliveries per message


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    index: int
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """One timed run: a label for the report, the topology and the payload size."""

    scenario: str
    label: str
    payload: int
    publishers: tuple[PublisherSpec, ...] = ()
    subscribers: tuple[SubscriberSpec, ...] = ()
    idle_clients: int = 0  # conns only


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (`+`, `#`); enough to count matching subscribers for any plan."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def matching_subscribers(topics: list[str],
                         filters: list[tuple[str, ...]]) -> dict[str, int]:
    """For each topic, how many subscribers (not filters: one delivery each) match it.

    Exact filters are counted through a dict, so pairs or fanin with 10,000 topics cost
    10,000 steps, not the 10^8 of trying every filter of every subscriber on every topic; only
    subscribers with wildcards are matched one by one (there is one in `spread`).
    """
    exact: Counter[str] = Counter()
    wild: list[tuple[frozenset[str], tuple[str, ...], int]] = []
    for subscriber_filters, count in Counter(filters).items():
        plain = frozenset(f for f in subscriber_filters if "+" not in f and "#" not in f)
        patterns = tuple(f for f in subscriber_filters if f not in plain)
        if patterns:
            wild.append((plain, patterns, count))
        else:
            for topic_filter in plain:
                exact[topic_filter] += count
    return {topic: exact[topic] + sum(
        count for plain, patterns, count in wild
        if topic in plain or any(topic_matches(p, topic) for p in patterns))
        for topic in set(topics)}


def _resolve_counts(scenario: str, publishers: int | None,
                    subscribers: int | None) -> tuple[int, int]:
    """Publisher and subscriber counts, refusing options a scenario would silently ignore."""
    fixed_pub = scenario in ("pubsub", "sizes", "fanout")
    fixed_sub = scenario in ("pubsub", "sizes", "fanin")
    if fixed_pub and publishers is not None and publishers != 1:
        raise PlanError(f"{scenario} has exactly one publisher; drop --publishers")
    if fixed_sub and subscribers is not None and subscribers != 1:
        raise PlanError(f"{scenario} has exactly one subscriber; drop --subscribers")
    if scenario == "pairs":
        if publishers is not None and subscribers is not None and publishers != subscribers:
            raise PlanError("pairs needs --publishers equal to --subscribers (or just one)")
        count = publishers if publishers is not None else subscribers
        count = 100 if count is None else count
        return count, count
    default_pub = 1 if fixed_pub else 100
    pubs = publishers if publishers is not None else default_pub
    subs = subscribers if subscribers is not None else (100 if scenario == "fanout" else 1)
    return pubs, subs


def build_plans(scenario: str, run_id: str, *, payload: int | None, publishers: int | None,
                subscribers: int | None, clients: int | None) -> list[Plan]:
    """The runs of `scenario`: one, except `sizes` which is two pubsub runs."""
    if scenario not in SCENARIOS:
        raise PlanError(f"unknown scenario {scenario!r}")
    for name, value in (("--publishers", publishers), ("--subscribers", subscribers),
                        ("--clients", clients)):
        if value is not None and value < 1:
            raise PlanError(f"{name} must be at least 1")
    prefix = f"culex-bench/{run_id}"
    if scenario == "conns":
        if publishers is not None or subscribers is not None:
            raise PlanError("conns opens idle clients; use --clients, not --publishers")
        count = 1000 if clients is None else clients
        return [Plan("conns", f"conns {count}", 0, idle_clients=count)]
    if clients is not None:
        raise PlanError("--clients is for the conns scenario")
    if scenario == "sizes":
        if payload is not None:
            raise PlanError(f"sizes chooses its own payloads {SIZES_PAYLOADS}; drop --payload")
        return [_topology("pubsub", f"pubsub {size} B", prefix, payload=size, pubs=1, subs=1)
                for size in SIZES_PAYLOADS]
    pubs, subs = _resolve_counts(scenario, publishers, subscribers)
    size = 100 if payload is None else payload
    return [_topology(scenario, scenario, prefix, payload=size, pubs=pubs, subs=subs)]


def _topology(scenario: str, label: str, prefix: str, *, payload: int, pubs: int,
              subs: int) -> Plan:
    topics: list[str]
    filters: list[tuple[str, ...]]
    if scenario in ("pubsub", "fanout", "hot"):
        topics = [f"{prefix}/{scenario}"] * pubs
        filters = [(topics[0],)] * subs
    elif scenario == "fanin":
        topics = [f"{prefix}/fanin/{i}" for i in range(pubs)]
        filters = [tuple(topics)] * subs
    elif scenario == "pairs":
        topics = [f"{prefix}/pairs/{i}" for i in range(pubs)]
        filters = [(topic,) for topic in topics]
    elif scenario == "spread":
        topics = [f"{prefix}/spread/{i}/data" for i in range(pubs)]
        filters = [(f"{prefix}/spread/#",)] * subs
    else:
        raise PlanError(f"no topology for {scenario!r}")
    fanout = matching_subscribers(topics, filters)
    publisher_specs = tuple(PublisherSpec(i, topic, fanout[topic])
                            for i, topic in enumerate(topics))
    subscriber_specs = tuple(SubscriberSpec(i, fs) for i, fs in enumerate(filters))
    return Plan(scenario, label, payload, publisher_specs, subscriber_specs)


def split_clients(plan: Plan, procs: int) -> list[tuple[list[PublisherSpec],
                                                        list[SubscriberSpec], int]]:
    """Deal clients round-robin over `procs` processes, publishers first then subscribers.

    Dealing one list means pubsub with --procs 2 puts the publisher and the subscriber in
    different processes, and fanout spreads its subscribers evenly. Processes that would get
    nothing are not started.
    """
    shares: list[tuple[list[PublisherSpec], list[SubscriberSpec], int]] = [
        ([], [], 0) for _ in range(procs)]
    for spec in plan.publishers:
        shares[spec.index % procs][0].append(spec)
    offset = len(plan.publishers)
    for sub in plan.subscribers:
        shares[(offset + sub.index) % procs][1].append(sub)
    idle = [plan.idle_clients // procs + (1 if i < plan.idle_clients % procs else 0)
            for i in range(procs)]
    result = [(pubs, subs, idle[i]) for i, (pubs, subs, _) in enumerate(shares)]
    return [share for share in result if share[0] or share[1] or share[2]]
