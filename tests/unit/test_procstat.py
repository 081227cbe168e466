"""The broker sampler reads a whole process tree from /proc: with `workers = N` the process
given to --broker-pid (Culex's supervisor) is idle and the CPU is spent by its children.

Real processes, no sockets: a parent that sleeps, a child and a grandchild that burn CPU. The
assertions compare cumulative counters read in order, so a loaded machine makes the test wait
longer, not fail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from culex.bench import procstat
from culex.bench.clients import BenchError
from culex.bench.procstat import ProcessSampler, read_process

# The parent sleeps; its child forks a grandchild, prints both pids, and both burn CPU. Every
# process stops by itself after a minute should the test fail to kill the group.
TREE = """
import os, sys, time
def burn():
    end = time.monotonic() + 60
    while time.monotonic() < end:
        pass
    os._exit(0)
if os.fork() == 0:
    grandchild = os.fork()
    if grandchild == 0:
        burn()
    print(os.getpid(), grandchild, flush=True)
    burn()
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, int, int]]:
    """(parent, child, grandchild) pids of a running TREE, killed afterwards."""
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert parent.stdout is not None
        child, grandchild = map(int, parent.stdout.readline().split())
        yield parent.pid, child, grandchild
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # its own session: only the processes above
        parent.wait()


def ticks(pid: int) -> int:
    return read_process(pid)[0]


def test_cpu_includes_children_and_grandchildren(tree: tuple[int, int, int]) -> None:
    parent, child, grandchild = tree
    sampler = ProcessSampler(parent)
    deadline = time.monotonic() + 30
    while ticks(child) + ticks(grandchild) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    burnt = ticks(child) + ticks(grandchild)
    assert burnt >= 20, "the burners got no CPU in 30 s"
    own = ticks(parent)
    # Read after the burners' counters, which only grow: the tree holds at least what they had.
    sample = sampler.sample()
    assert sample.cpu_seconds >= (own + burnt) / procstat.CLOCK_TICKS
    assert own < burnt  # the parent sleeps: the figure is the children's
    cpu, _wait, rss, _peak = sampler.between(sampler.samples[0].monotonic_ns,
                                             sample.monotonic_ns)
    assert cpu > 0
    assert rss == sample.rss_bytes > read_process(parent)[1] * 1024  # three processes' RSS


def test_a_child_gone_between_scan_and_read_is_skipped(
        tree: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    parent, _child, _grandchild = tree
    real = procstat.read_process

    def vanishing(pid: int) -> tuple[int, int]:
        if pid != parent:
            raise FileNotFoundError(f"/proc/{pid}/stat")
        return real(pid)

    monkeypatch.setattr(procstat, "read_process", vanishing)
    sample = ProcessSampler(parent).samples[0]
    own_ticks, own_rss_kb = real(parent)
    assert sample.rss_bytes == own_rss_kb * 1024
    assert sample.cpu_seconds == own_ticks / procstat.CLOCK_TICKS


def test_a_real_child_that_exits_does_not_break_sampling(tree: tuple[int, int, int]) -> None:
    parent, child, grandchild = tree
    sampler = ProcessSampler(parent)
    # The grandchild's zombie goes to init when its parent dies and is reaped there, at some
    # point during the samples; `child` stays a zombie of the parent, which never waits.
    os.kill(grandchild, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)
    for _ in range(20):
        sampler.sample()
    assert len(sampler.samples) == 21


def test_single_process_unchanged() -> None:
    """No children: the sample is that process's own counters, as before trees were read."""
    lone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)  # past start-up: asleep, its counters no longer move
        sample = ProcessSampler(lone.pid).samples[0]
        own_ticks, own_rss_kb = read_process(lone.pid)
    finally:
        lone.kill()
        lone.wait()
    assert sample.cpu_seconds == own_ticks / procstat.CLOCK_TICKS
    assert sample.rss_bytes == own_rss_kb * 1024 > 0


def test_missing_pid_is_a_bench_error() -> None:
    with open("/proc/sys/kernel/pid_max") as pid_max:
        unused = int(pid_max.read())  # pids are below pid_max
    with pytest.raises(BenchError, match="no such process"):
        ProcessSampler(unused)
