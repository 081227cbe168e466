"""CPU and memory of the broker under test, read from /proc (Linux, same host).

Throughput without the broker's CPU is half a figure: 100k msgs/s at 30 % CPU and at 100 %
are different brokers. /proc/PID/stat gives cumulative user+system CPU ticks, /proc/PID/status
the resident set; sampling both once a second costs nothing and needs no broker cooperation,
so it works for Mosquitto as well as Culex.

The broker is a process tree: the given pid and its descendants, summed. With `workers = N`
Culex's supervisor uses next to no CPU and the work is in the processes it forks, so the pid
alone would report an idle broker. The tree is read again at each sample, from the parent pid
in every /proc/N/stat: /proc/PID/task/TID/children would be cheaper but exists only with
CONFIG_PROC_CHILDREN, which some kernels (this project's benchmark VM among them) lack; the
scan reads one small file per process on the host (about 20 us each), once a second. A
descendant that exits between the scan and the read is left out of that sample. Each sample
also keeps every process's own RSS (the supervisor's and each worker's), since a sum hides a
worker that grows alone. The summed RSS counts pages shared copy-on-write after a fork once per
process, so with workers it overstates the memory really used.

/proc/PID/schedstat adds the time the process was runnable but waiting for a CPU. On a shared
or oversubscribed machine that is the difference between "the broker is slow" and "the broker
did not get the CPU": a broker at 50 % CPU that waited 45 % of the time was starved, not idle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .clients import NS, BenchError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    monotonic_ns: int
    cpu_seconds: float
    rss_bytes: int
    wait_seconds: float  # runnable, not running (main threads); 0 where schedstat is missing
    processes: tuple[tuple[int, int], ...] = ()  # (pid, RSS bytes): the root, then descendants


class ProcessSampler:
    """Samples a process and its descendants; `cpu_percent` between two samples is 100 per
    busy core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[ProcSample] = []
        self.sample()  # fail now, before any client connects, if the pid is wrong

    def read(self) -> ProcSample:
        try:
            ticks, rss_kb = read_process(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            raise BenchError(f"--broker-pid {self.pid}: no such process") from None
        except (OSError, IndexError, ValueError) as exc:
            raise BenchError(f"--broker-pid {self.pid}: cannot read /proc: {exc}") from None
        wait = run_queue_wait(self.pid)
        processes = [(self.pid, rss_kb * 1024)]
        for pid in descendants(self.pid):
            try:
                child_ticks, child_rss_kb = read_process(pid)
            except (OSError, IndexError, ValueError):
                continue  # exited since the scan (a zombie's stat is still readable)
            ticks += child_ticks
            rss_kb += child_rss_kb
            wait += run_queue_wait(pid)
            processes.append((pid, child_rss_kb * 1024))
        processes[1:] = sorted(processes[1:])  # by pid: the order of forking, as a rule
        return ProcSample(time.monotonic_ns(), ticks / CLOCK_TICKS, rss_kb * 1024, wait,
                          tuple(processes))

    def sample(self) -> ProcSample:
        taken = self.read()
        self.samples.append(taken)
        return taken

    def between(self, start_ns: int, end_ns: int) -> tuple[float, float, int, int]:
        """CPU %, CPU-wait %, last RSS and peak RSS over the samples in [start_ns, end_ns]."""
        inside = [s for s in self.samples if start_ns <= s.monotonic_ns <= end_ns]
        if len(inside) < 2:
            return 0.0, 0.0, (inside[-1].rss_bytes if inside else 0), 0
        first, last = inside[0], inside[-1]
        elapsed = (last.monotonic_ns - first.monotonic_ns) / NS
        if elapsed <= 0:
            return 0.0, 0.0, last.rss_bytes, last.rss_bytes
        cpu = 100.0 * (last.cpu_seconds - first.cpu_seconds) / elapsed
        wait = 100.0 * (last.wait_seconds - first.wait_seconds) / elapsed
        return cpu, wait, last.rss_bytes, max(s.rss_bytes for s in inside)


def stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat after "(comm)", which may itself hold spaces and parentheses: state is
    index 0, ppid 1, utime 11, stime 12 (proc(5) numbers 3, 4, 14, 15)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()


def read_process(pid: int) -> tuple[int, int]:
    """CPU ticks (user + system, every thread) and resident set in KB of one process."""
    fields = stat_fields(pid)
    with open(f"/proc/{pid}/status", "rb") as status:
        rss_kb = next((int(line.split()[1]) for line in status if line.startswith(b"VmRSS:")), 0)
    return int(fields[11]) + int(fields[12]), rss_kb


def descendants(root: int) -> Iterator[int]:
    """Every live descendant of `root`, from one scan of /proc (see the module docstring)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # exited during the scan
        children.setdefault(ppid, []).append(int(entry.name))
    pending = list(children.get(root, ()))
    seen = {root}
    while pending:
        pid = pending.pop()
        if pid in seen:  # pid reuse mid-scan could make a cycle out of stale entries
            continue
        seen.add(pid)
        yield pid
        pending.extend(children.get(pid, ()))


def run_queue_wait(pid: int | str = "self") -> float:
    """Seconds the process's main thread has spent runnable but not running (0 if unknown)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as schedstat:
            return int(schedstat.read().split()[1]) / NS
    except (OSError, IndexError, ValueError):
        return 0.0
