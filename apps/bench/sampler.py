"""CPU seconds and resident memory of the actor processes, sampled with psutil.

A background thread samples every watched process (``cpu_times`` user+system,
``memory_info().rss``) every ``interval`` seconds; :meth:`Sampler.snapshot`
takes one sample of everything now (at a round's start and end). CPU spent
between two moments is the difference of the last samples taken at or before
each; for a process that has exited, its last sample stands (it misses at
most one interval of its life). The machine's own busy time is sampled too,
so a report can say how much of the machine other programs took.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Series:
    name: str
    role: str
    pid: int
    times: list = field(default_factory=list)  # Unix time of each sample
    cpu: list = field(default_factory=list)  # user+system CPU seconds so far
    rss: list = field(default_factory=list)  # bytes
    gone: bool = False


class Sampler:
    def __init__(self, interval: float = 0.2):
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.series: dict[str, Series] = {}
        self._procs: dict[str, object] = {}
        self._machine: list[tuple[float, float, float]] = []  # (time, busy cpu s, total cpu s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def watch(self, name: str, role: str, pid: int) -> None:
        with self._lock:
            if name in self.series and self.series[name].pid == pid:
                return
            try:
                self._procs[name] = self._psutil.Process(pid)
            except self._psutil.NoSuchProcess:
                return
            self.series[name] = Series(name, role, pid)
        self._sample_one(name)

    # -- sampling ----------------------------------------------------------------------------
    def _sample_one(self, name: str) -> None:
        ps = self._psutil
        proc = self._procs.get(name)
        s = self.series[name]
        if proc is None or s.gone:
            return
        try:
            with proc.oneshot():
                ct = proc.cpu_times()
                rss = proc.memory_info().rss
        except (ps.NoSuchProcess, ps.ZombieProcess, ps.AccessDenied):
            s.gone = True
            return
        s.times.append(time.time())
        s.cpu.append(ct.user + ct.system)
        s.rss.append(rss)

    def _sample_machine(self) -> None:
        ct = self._psutil.cpu_times()
        busy = sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        self._machine.append((time.time(), busy, busy + ct.idle + getattr(ct, "iowait", 0.0)))

    def snapshot(self) -> float:
        """Sample everything now; returns the Unix time of the snapshot."""
        with self._lock:
            for name in list(self.series):
                self._sample_one(name)
            self._sample_machine()
        return time.time()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.snapshot()

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _at(times: list, values: list, t: float):
        i = bisect.bisect_right(times, t) - 1
        return values[i] if i >= 0 else None

    def cpu_between(self, name: str, t0: float, t1: float) -> float | None:
        """CPU seconds ``name`` spent between ``t0`` and ``t1`` (None if not sampled then)."""
        with self._lock:
            s = self.series.get(name)
            if s is None or not s.times:
                return None
            a = self._at(s.times, s.cpu, t0)
            b = self._at(s.times, s.cpu, t1)
        if b is None:
            return None
        return max(0.0, b - (a if a is not None else 0.0))

    def rss_peak(self, name: str, t0: float | None = None, t1: float | None = None) -> int | None:
        with self._lock:
            s = self.series.get(name)
            if s is None:
                return None
            vals = [r for t, r in zip(s.times, s.rss, strict=False)
                    if (t0 is None or t >= t0) and (t1 is None or t <= t1)]
        return max(vals) if vals else None

    def machine_busy(self, t0: float, t1: float) -> float | None:
        """Busy CPU seconds of the whole machine between two snapshots (all processes)."""
        with self._lock:
            times = [m[0] for m in self._machine]
            a = self._at(times, [m[1] for m in self._machine], t0)
            b = self._at(times, [m[1] for m in self._machine], t1)
        return None if a is None or b is None else b - a
