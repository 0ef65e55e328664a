"""The witness of a VM's declared service probes (``vmferry vm set VM --probe``).

It starts :mod:`vmferry.drivers.probe_loop` (in a network namespace when the VM says so),
learns a baseline before the move (which probes answer at all), keeps trying through the
move, and after it waits up to ``settle_s`` for every probe that answered before to answer
again. The longest time between two answers is the service's blackout.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Sequence

from vmferry.drivers.probe_loop import loop_command
from vmferry.model.probe import ProbeResult, ProbeSample, summarize
from vmferry.verify.witness import WitnessReport

BASELINE_S = 1.5  # tries before the move: long enough for tries that time out to end
SETTLE_S = 10.0  # after the move: a service (ARP, a TCP listener) may take a moment
# A try gives up after this: a TCP connect whose SYN was lost while the guest was paused
# would otherwise wait for the kernel's retransmission (1 s), and the blackout would be
# measured in seconds; the next try sends a new SYN at once instead.
TRY_TIMEOUT_S = 0.5


class ProbeWitness:
    def __init__(self, specs: Sequence[str], netns: str | None = None, *,
                 interval_s: float = 0.1, baseline_s: float = BASELINE_S,
                 settle_s: float = SETTLE_S, timeout_s: float = TRY_TIMEOUT_S) -> None:  # fmt: skip
        self.specs = tuple(specs)
        self.netns = netns
        self.interval_s = interval_s
        self.baseline_s = baseline_s
        self.settle_s = settle_s
        self.timeout_s = timeout_s
        self._samples: list[ProbeSample] = []
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.started_at = 0.0

    def command(self) -> list[str]:
        return loop_command(self.specs, self.netns, "--interval", str(self.interval_s),
                            "--timeout", str(self.timeout_s))  # fmt: skip

    def start(self) -> None:
        self._process = subprocess.Popen(self.command(), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True)  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="vmferry-probes", daemon=True)
        self._reader.start()
        time.sleep(self.baseline_s)
        self.started_at = time.monotonic()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                doc = json.loads(line)
                sample = ProbeSample(int(doc["i"]), float(doc["at"]), bool(doc["ok"]))
            except (ValueError, KeyError, TypeError):
                continue
            with self._lock:
                self._samples.append(sample)

    def samples(self) -> list[ProbeSample]:
        with self._lock:
            return list(self._samples)

    def baseline(self) -> list[bool]:
        """Per probe: did it answer before the move?"""
        seen = self.samples()
        return [any(s.ok and s.index == i and s.at < self.started_at for s in seen)
                for i in range(len(self.specs))]  # fmt: skip

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        moved_at = time.monotonic() if moved else None
        if moved_at is not None:
            wanted = [i for i, ok in enumerate(self.baseline()) if ok]
            deadline = moved_at + self.settle_s
            while wanted and time.monotonic() < deadline:
                seen = self.samples()
                wanted = [i for i in wanted if not _answered(seen, i, moved_at)]
                time.sleep(self.interval_s)
        self._stop()
        seen = self.samples()
        results = tuple(summarize(spec, [s for s in seen if s.index == i], self.started_at,
                                  moved_at)
                        for i, spec in enumerate(self.specs))  # fmt: skip
        counted = any(r.baseline for r in results)  # else it proves nothing
        return WitnessReport(None, None, None, None, probes=results,
                             warnings=probe_warnings(results, moved, self.settle_s),
                             level="probes" if counted else None)  # fmt: skip

    def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)


def _answered(samples: Sequence[ProbeSample], index: int, since: float) -> bool:
    return any(s.ok and s.index == index and s.at >= since for s in samples)


def probe_warnings(results: Sequence[ProbeResult], moved: bool, settle_s: float) -> tuple[str, ...]:
    """One line per probe that did not answer before the move, or (after a completed move)
    did not answer again within ``settle_s``."""
    lines: list[str] = []
    for result in results:
        if not result.baseline:
            lines.append(f"probe {result.spec} did not answer before the move; it is not counted")
        elif moved and not result.ok:
            lines.append(f"probe {result.spec} did not answer within {settle_s:g} s after the move")
    return tuple(lines)
