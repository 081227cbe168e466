"""A log-bucketed (HDR-style) latency histogram with mergeable counts.

Why not store every sample: a 10 s run at 500k msgs/s is five million latencies, and with
`--procs` they live in several processes that must be combined. Why not fixed-width buckets:
latencies span five decades (tens of microseconds when idle, seconds when a broker queues), and
linear buckets are either too coarse at the bottom or too many at the top.

Values are non-negative integers (microseconds here). Below `LINEAR_LIMIT` every value has its
own bucket; above it each power of two is split into `SUB_BUCKETS` equal buckets, so a bucket is
at most 1/128 (0.78 %) of its value wide. The index of a value is a shift and an add, which the
subscriber's hot loop inlines (see `bucket_index`); the list of counts is plain Python ints so
merging two histograms (other seconds, other processes) is element-wise addition and a
histogram crosses a process boundary as a small sparse dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SUB_BITS = 7
SUB_BUCKETS = 1 << SUB_BITS  # buckets per power of two above the linear range
LINEAR_LIMIT = SUB_BUCKETS << 1  # 256: values below it are exact
MAX_VALUE = (1 << 62) - 1
# Index of MAX_VALUE plus one: 55 shifts of 128 buckets on top of the 256 exact ones.
BUCKET_COUNT = ((MAX_VALUE.bit_length() - SUB_BITS - 1) << SUB_BITS) + LINEAR_LIMIT


def bucket_index(value: int) -> int:
    """Bucket of `value`; the subscriber hot loop repeats this arithmetic inline."""
    if value < LINEAR_LIMIT:
        return max(value, 0)
    value = min(value, MAX_VALUE)
    shift = value.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Lowest and highest value that land in bucket `index` (inclusive)."""
    if index < LINEAR_LIMIT:
        return index, index
    shift = (index >> SUB_BITS) - 1
    quotient = index - (shift << SUB_BITS)
    return quotient << shift, ((quotient + 1) << shift) - 1


class Histogram:
    """Counts per bucket plus the exact maximum (the one figure people compare across runs)."""

    __slots__ = ("counts", "max_value")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * BUCKET_COUNT
        self.max_value = 0

    def record(self, value: int, count: int = 1) -> None:
        """Add `count` samples of `value` (off the hot path: setup, connect latencies, tests)."""
        self.counts[bucket_index(value)] += count
        self.max_value = max(self.max_value, value)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def merge(self, other: Histogram) -> None:
        """Add `other`'s samples to this histogram (seconds into a run, processes into one)."""
        mine = self.counts
        for index, count in enumerate(other.counts):
            if count:
                mine[index] += count
        self.max_value = max(self.max_value, other.max_value)

    def percentile(self, percent: float) -> int:
        """Value at `percent` (0-100): the middle of its bucket, clamped to the exact max.

        The clamp keeps p50 <= p99 <= max true even when the top samples share a bucket; an
        empty histogram reports 0.
        """
        total = self.total
        if total == 0:
            return 0
        rank = max(1, min(total, -int(-percent * total // 100)))  # ceil without floats drift
        seen = 0
        for index, count in enumerate(self.counts):
            if count:
                seen += count
                if seen >= rank:
                    low, high = bucket_bounds(index)
                    return min((low + high) // 2, self.max_value)
        return self.max_value

    def percentiles(self, percents: Iterable[float]) -> dict[float, int]:
        return {percent: self.percentile(percent) for percent in percents}

    def mean(self) -> float:
        total = self.total
        if total == 0:
            return 0.0
        weighted = 0
        for index, count in enumerate(self.counts):
            if count:
                low, high = bucket_bounds(index)
                weighted += count * ((low + high) // 2)
        return weighted / total

    def to_sparse(self) -> dict[int, int]:
        """Non-empty buckets only: what crosses a process pipe and goes into --json."""
        return {index: count for index, count in enumerate(self.counts) if count}

    @classmethod
    def from_sparse(cls, sparse: Mapping[int, int], max_value: int) -> Histogram:
        histogram = cls()
        for index, count in sparse.items():
            histogram.counts[index] += count
        # The hot loop tracks the exact max only above the linear range, where buckets are
        # wider than one; below it the highest bucket is the max.
        top = max((index for index, count in sparse.items() if count), default=0)
        histogram.max_value = max(max_value, bucket_bounds(top)[0])
        return histogram

    def buckets(self) -> list[tuple[int, int, int]]:
        """(low, high, count) of every non-empty bucket, for --json readers without this code."""
        return [(*bucket_bounds(index), count)
                for index, count in enumerate(self.counts) if count]
