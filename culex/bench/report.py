"""Turning results into what people read: the table, the --json file, the --plot picture.

The table is transposed (one column per run, one row per figure) because `sizes` has two runs
and twenty-odd figures: twenty columns do not fit a terminal, two do. The JSON carries the same
figures plus the raw material (histogram buckets, per-second timeline) so runs can be compared
or re-plotted later without re-running them.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

from .. import __version__
from .clients import BenchError
from .histogram import Histogram
from .runner import ConnsResult, Options, Result, TrafficResult

SATURATED_PERCENT = 90.0  # load generator CPU per process above which figures are suspect
STARVED_PERCENT = 10.0  # time runnable but without a CPU above which figures are suspect


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _opt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def traffic_rows(result: TrafficResult) -> list[tuple[str, str]]:
    latency = result.latency
    rows = [
        ("mqtt", result.protocol),
        ("qos", str(result.qos)),
        ("payload (bytes)", _int(result.payload)),
        ("publishers / subscribers", f"{result.publishers} / {result.subscribers}"),
        ("offered rate (msgs/s)", _int(result.rate) if result.rate else "max"),
        ("measured (s)", f"{result.duration_s:g} (+{result.warmup_s:g} warm-up)"),
        ("sent", _int(result.sent)),
        ("expected", _int(result.expected)),
        ("delivered", _int(result.delivered)),
        ("loss", f"{_int(result.loss)} ({result.loss_percent:.2f}%)"),
        ("publish (msgs/s)", _int(result.publish_rate)),
        ("delivery (msgs/s)", _int(result.delivery_rate)),
    ]
    for name, percent in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9)):
        rows.append((f"latency {name} (us)", _int(latency.percentile(percent))))
    rows += [
        ("latency max (us)", _int(latency.max_value)),
        ("errors (connection / protocol)",
         f"{result.connection_errors} / {result.protocol_errors}"),
        ("duplicates", _opt(result.duplicates)),
        ("out of order", _opt(result.out_of_order)),
        ("broker cpu (%)", _opt(result.broker.cpu_percent if result.broker else None)),
        ("broker waiting for a cpu (%)",
         _opt(result.broker.cpu_wait_percent if result.broker else None)),
        ("broker rss (MB)", _opt(result.broker.rss_mb if result.broker else None, 1)),
        (f"bench cpu (%, {result.procs} proc)", f"{result.bench_cpu_percent:.0f}"),
        ("bench waiting for a cpu (%)", f"{result.bench_wait_percent:.0f}"),
    ]
    return rows


def conns_rows(result: ConnsResult) -> list[tuple[str, str]]:
    latency = result.connect_latency
    broadcast = result.broadcast
    processes = result.broker.processes if result.broker else []
    return [
        ("mqtt", result.protocol),
        ("clients", _int(result.clients)),
        ("source addresses", str(result.sources) if result.sources else "-"),
        ("connected", _int(result.connected)),
        ("failed", _int(result.failed)),
        ("time to all connected (s)", f"{result.seconds_to_all:.3f}"),
        ("connect rate (conns/s)", _int(result.connect_rate)),
        ("connect p50 (ms)", f"{latency.percentile(50) / 1000:.2f}"),
        ("connect p99 (ms)", f"{latency.percentile(99) / 1000:.2f}"),
        ("connect max (ms)", f"{latency.max_value / 1000:.2f}"),
        ("held idle (s)", f"{result.held_s:g}"),
        ("still open at end", _int(result.still_open)),
        ("errors (connection / protocol)",
         f"{result.connection_errors} / {result.protocol_errors}"),
        ("broker cpu connecting (%)", _opt(result.broker_cpu_connecting)),
        ("broker rss before (MB)", _opt(result.broker_rss_before_mb, 1)),
        ("broker rss connected (MB)", _opt(result.broker.rss_mb if result.broker else None, 1)),
        ("broker rss per connection (KB)", _opt(result.broker_kb_per_connection, 1)),
        ("broker rss by process (MB)",
         " ".join(f"{size:.0f}" for _pid, size in processes) if len(processes) > 1 else "-"),
        ("broadcast received", f"{_int(broadcast.received)} / {_int(broadcast.expected)}"
         if broadcast else "-"),
        ("broadcast last arrival (ms)", _opt(broadcast.last_ms if broadcast else None, 1)),
        ("broker cpu while held (%)",
         _opt(result.broker.cpu_percent if result.broker else None)),
        (f"bench cpu connecting (%, {result.procs} proc)", f"{result.bench_cpu_percent:.0f}"),
        ("bench waiting for a cpu (%)", f"{result.bench_wait_percent:.0f}"),
    ]


def format_table(results: list[Result]) -> str:
    """One column per run, one row per figure, right-aligned numbers."""
    columns = [traffic_rows(r) if isinstance(r, TrafficResult) else conns_rows(r)
               for r in results]
    names = [name for name, _ in columns[0]]
    headers = [r.label for r in results]
    name_width = max(len("figure"), *(len(name) for name in names))
    widths = [max(len(header), *(len(value) for _, value in column))
              for header, column in zip(headers, columns, strict=True)]
    lines = ["  ".join(["figure".ljust(name_width),
                        *(h.rjust(w) for h, w in zip(headers, widths, strict=True))])]
    lines.append("  ".join(["-" * name_width, *("-" * w for w in widths)]))
    for row, name in enumerate(names):
        cells = [column[row][1].rjust(width) for column, width in zip(columns, widths,
                                                                        strict=True)]
        lines.append("  ".join([name.ljust(name_width), *cells]))
    for result in results:
        lines.extend(notes(result))
    return "\n".join(lines)


def notes(result: Result) -> list[str]:
    """Warnings that change how the figures should be read."""
    found = []
    per_process = result.bench_cpu_percent / max(1, result.procs)
    if per_process >= SATURATED_PERCENT:
        found.append(f"note: {result.label}: the load generator ran at {per_process:.0f}% CPU "
                     "per process; the figures may show its limit, not the broker's "
                     "(more --procs, or pin broker and bench to different cores)")
    if result.bench_wait_percent >= STARVED_PERCENT:
        found.append(f"note: {result.label}: the load generator waited for a CPU "
                     f"{result.bench_wait_percent:.0f}% of the time: something else runs on "
                     "its core")
    if result.broker is not None and result.broker.cpu_wait_percent >= STARVED_PERCENT:
        found.append(f"note: {result.label}: the broker waited for a CPU "
                     f"{result.broker.cpu_wait_percent:.0f}% of the time: something else runs "
                     "on its core, so these figures understate it")
    for message in result.error_messages[:3]:
        found.append(f"note: {result.label}: {message}")
    return found


def _latency_dict(histogram: Histogram) -> dict[str, float]:
    return {"p50": histogram.percentile(50), "p95": histogram.percentile(95),
            "p99": histogram.percentile(99), "p99_9": histogram.percentile(99.9),
            "max": histogram.max_value, "mean": round(histogram.mean(), 1),
            "count": histogram.total}


def result_dict(result: Result) -> dict[str, Any]:
    broker = None
    if result.broker is not None:
        broker = {"cpu_percent": round(result.broker.cpu_percent, 1),
                  "cpu_wait_percent": round(result.broker.cpu_wait_percent, 1),
                  "rss_mb": round(result.broker.rss_mb, 2),
                  "rss_peak_mb": round(result.broker.rss_peak_mb, 2),
                  "processes": [{"pid": pid, "rss_mb": round(size, 2)}
                                for pid, size in result.broker.processes]}
    if isinstance(result, ConnsResult):
        return {
            "label": result.label, "scenario": "conns", "protocol": result.protocol,
            "clients": result.clients,
            "connected": result.connected, "failed": result.failed,
            "seconds_to_all_connected": round(result.seconds_to_all, 4),
            "connect_rate": round(result.connect_rate, 1),
            "connect_latency_us": _latency_dict(result.connect_latency),
            "held_s": result.held_s, "still_open": result.still_open,
            "errors": {"connection": result.connection_errors,
                       "protocol": result.protocol_errors, "messages": result.error_messages},
            "broker": broker, "broker_rss_before_mb": result.broker_rss_before_mb,
            "broker_cpu_connecting_percent": result.broker_cpu_connecting,
            "broker_kb_per_connection": result.broker_kb_per_connection,
            "bench_cpu_percent": round(result.bench_cpu_percent, 1),
            "bench_wait_percent": round(result.bench_wait_percent, 1), "procs": result.procs,
            "sources": result.sources,
            "broadcast": None if result.broadcast is None else {
                "expected": result.broadcast.expected, "received": result.broadcast.received,
                "last_ms": result.broadcast.last_ms},
            "connect_histogram_us": result.connect_latency.buckets(),
        }
    return {
        "label": result.label, "scenario": result.scenario, "protocol": result.protocol,
        "qos": result.qos,
        "payload": result.payload, "publishers": result.publishers,
        "subscribers": result.subscribers, "duration_s": result.duration_s,
        "warmup_s": result.warmup_s, "rate": result.rate, "procs": result.procs,
        "sent": result.sent, "expected": result.expected, "delivered": result.delivered,
        "loss": result.loss, "loss_percent": round(result.loss_percent, 4),
        "publish_rate": round(result.publish_rate, 1),
        "delivery_rate": round(result.delivery_rate, 1),
        "latency_us": _latency_dict(result.latency),
        "errors": {"connection": result.connection_errors, "protocol": result.protocol_errors,
                   "messages": result.error_messages},
        "duplicates": result.duplicates, "out_of_order": result.out_of_order,
        "unacknowledged": result.unacknowledged,
        "bench_cpu_percent": round(result.bench_cpu_percent, 1),
        "bench_wait_percent": round(result.bench_wait_percent, 1),
        "broker": broker,
        "timeline": [{"second": p.second, "sent": p.sent, "delivered": p.delivered,
                      "p50_us": p.p50_us, "p99_us": p.p99_us, "max_us": p.max_us,
                      "broker_cpu_percent": (None if p.broker_cpu_percent is None
                                             else round(p.broker_cpu_percent, 1)),
                      "broker_rss_mb": (None if p.broker_rss_mb is None
                                        else round(p.broker_rss_mb, 2))}
                     for p in result.timeline],
        "histogram_us": result.latency.buckets(),
    }


def write_json(path: Path, scenario: str, options: Options, results: list[Result]) -> None:
    document = {
        "tool": "culex bench", "version": __version__, "scenario": scenario,
        "options": {"host": options.endpoint.host, "port": options.endpoint.port,
                    "unix": options.endpoint.unix,
                    "websocket_path": options.endpoint.websocket_path, "qos": options.qos,
                    "duration": options.duration, "warmup": options.warmup,
                    "rate": options.rate, "inflight": options.inflight,
                    "procs": options.procs, "drain": options.drain,
                    "broker_pid": options.broker_pid, "persistent": options.persistent,
                    "mqtt5": options.mqtt5, "protocol": options.protocol,
                    "sources": list(options.sources), "broadcast": options.broadcast},
        "results": [result_dict(result) for result in results],
    }
    try:
        path.write_text(json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- --plot -------------------------------------------------------------------------------------

def load_pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or a one-line error.

    Imported by name so neither the tool nor mypy needs matplotlib unless --plot is used; it is
    the `bench-plot` extra, not a dependency.
    """
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'culex[bench-plot]'") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


SPECTRUM = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999)


def _spectrum(histogram: Histogram) -> tuple[list[float], list[float]]:
    """Percentile curve HDR-style: x is 1/(1-p) on a log axis so the tail gets the room."""
    xs = [1 / (1 - p / 100) for p in SPECTRUM]
    ys = [float(max(histogram.percentile(p), 1)) for p in SPECTRUM]
    xs.append(xs[-1] * 3)
    ys.append(float(max(histogram.max_value, 1)))
    return xs, ys


def write_plot(path: Path, results: list[Result]) -> None:
    pyplot = load_pyplot()
    traffic = [r for r in results if isinstance(r, TrafficResult)]
    rows = 3 if traffic else 1
    figure, axes = pyplot.subplots(rows, len(results), figsize=(6 * len(results), 3.6 * rows),
                                   squeeze=False)
    ticks = [1 / (1 - p / 100) for p in (0, 90, 99, 99.9, 99.99, 99.999)]
    tick_labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
    for column, result in enumerate(results):
        spectrum = axes[0][column]
        histogram = (result.latency if isinstance(result, TrafficResult)
                     else result.connect_latency)
        xs, ys = _spectrum(histogram)
        spectrum.plot(xs, ys, marker=".")
        spectrum.set_xscale("log")
        spectrum.set_yscale("log")
        spectrum.set_xticks(ticks, tick_labels)
        spectrum.set_xlabel("percentile")
        spectrum.set_ylabel("microseconds")
        what = "end-to-end latency" if isinstance(result, TrafficResult) else "connect time"
        spectrum.set_title(f"{result.label}: {what}")
        spectrum.grid(True, which="both", alpha=0.3)
        if not isinstance(result, TrafficResult):
            continue
        # Each point is drawn at the middle of its second; the last second of a window that
        # is not a whole number of seconds is shorter, so its counts are scaled to a rate.
        widths = [min(1.0, result.duration_s - p.second) if p.second < result.duration_s
                  else 1.0 for p in result.timeline]
        seconds = [p.second + w / 2 for p, w in zip(result.timeline, widths, strict=True)]
        over_time = axes[1][column]
        for name, values in (("p50", [p.p50_us for p in result.timeline]),
                             ("p99", [p.p99_us for p in result.timeline]),
                             ("max", [p.max_us for p in result.timeline])):
            over_time.plot(seconds, [max(v, 1) for v in values], marker=".", label=name)
        for axis in (over_time, axes[2][column]):
            axis.axvline(result.duration_s, color="grey", linewidth=0.8, linestyle=":")
            axis.text(result.duration_s, 0.98, " publishing stops", fontsize=7, color="grey",
                      va="top", transform=axis.get_xaxis_transform())
        over_time.set_yscale("log")
        over_time.set_xlabel("second of the measured window (receive time)")
        over_time.set_ylabel("latency (us)")
        over_time.legend()
        over_time.grid(True, alpha=0.3)
        throughput = axes[2][column]
        throughput.plot(seconds, [p.sent / w for p, w in zip(result.timeline, widths,
                                                             strict=True)],
                        marker=".", label="published/s")
        throughput.plot(seconds, [p.delivered / w for p, w in zip(result.timeline, widths,
                                                                  strict=True)],
                        marker=".", label="delivered/s")
        throughput.set_xlabel("second of the measured window")
        throughput.set_ylabel("messages per second")
        peak = max([p.sent / w for p, w in zip(result.timeline, widths, strict=True)]
                   + [p.delivered / w for p, w in zip(result.timeline, widths, strict=True)]
                   + [1.0])
        throughput.set_ylim(0, peak * 1.3)
        throughput.legend()
        throughput.grid(True, alpha=0.3)
        if result.broker is not None and any(p.broker_cpu_percent is not None
                                             for p in result.timeline):
            cpu_axis = throughput.twinx()
            cpu_axis.plot(seconds, [math.nan if p.broker_cpu_percent is None
                                    else p.broker_cpu_percent for p in result.timeline],
                          color="grey", linestyle="--", label="broker cpu %")
            cpu_axis.set_ylabel("broker cpu %")
            cpu_axis.set_ylim(0, max(100.0, *(p.broker_cpu_percent or 0.0
                                               for p in result.timeline)) * 1.1)
            cpu_axis.legend(loc="upper right")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        pyplot.close(figure)
