"""The simulator harness's performance statistics (tests/support/vcsim/main.go), which the
tests of vmferry's mapping of vCenter's statistics rely on: /vcsim-test/perf sets a VM's
series and QueryPerf, through pyvmomi, gives exactly those values, stamped ``interval_s``
apart with the newest now (startTime exclusive, endTime inclusive, then the newest
maxSample), zeros for a counter not set, and the simulator's own answer for a VM without
series; the rest of the PerformanceManager answers as before."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from pyVmomi import vim, vmodl
from support.vcsim import Vcsim, running_vcsim, set_perf
from support.vcsim_disks import admin, find_vm

VM = "DC0_H0_VM0"  # series set
UNSET = "DC0_H0_VM1"  # none: the simulator's own answer
OTHER = "DC0_C0_RP0_VM0"  # series set twice
INTERVAL = 20
SERIES = {
    "cpu.usage.average": [100, 2500, 4000, 900, 7500, 10000],
    "mem.active.average": [1048576, 2097152, 524288, 3145728, 4194304, 262144],
    "disk.read.average": [0, 120, 4500, 80, 0, 65000],
    "disk.write.average": [300, 0, 12000, 7, 99999, 1],
    "net.received.average": [12, 34, 56, 78, 90, 123456],
    "net.transmitted.average": [9, 8, 7, 6, 5, 2**40],  # a long, not an int
}
N = 6
NAMES = list(SERIES)
NOT_SET = "cpu.ready.summation"  # the simulator has canned data for it


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path_factory.mktemp("vcsim")) as started:
        yield started


@pytest.fixture
def instance(sim: Vcsim) -> Iterator[Any]:
    set_perf(sim, VM, SERIES)
    with admin(sim) as logged_in:
        yield logged_in


@pytest.fixture
def counters(instance: Any) -> dict[str, int]:
    """Counter names (``<group>.<name>.<rollup>``) to ids, from perfManager.perfCounter."""
    return {f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": c.key
            for c in instance.content.perfManager.perfCounter}  # fmt: skip


def query(instance: Any, counters: dict[str, int], vm: str, names: list[str],
          instance_name: str = "", **spec: Any) -> Any:  # fmt: skip
    """QueryPerf's one PerfEntityMetric for ``vm``: ``names`` asked with ``instance_name``,
    intervalId 20, and ``spec`` (startTime, endTime, maxSample)."""
    ids = [vim.PerformanceManager.MetricId(counterId=counters[name], instance=instance_name)
           for name in names]  # fmt: skip
    entity = find_vm(instance, vm)
    answer = instance.content.perfManager.QueryPerf(querySpec=[vim.PerformanceManager.QuerySpec(
        entity=entity, metricId=ids, intervalId=INTERVAL, **spec)])  # fmt: skip
    assert len(answer) == 1
    metric = answer[0]
    assert isinstance(metric, vim.PerformanceManager.EntityMetric)
    assert metric.entity == entity
    return metric


def values(metric: Any, counters: dict[str, int]) -> dict[str, list[int]]:
    """Each series' values by counter name, in the answer's order; every series' instance ""
    and as long as sampleInfo."""
    names = {key: name for name, key in counters.items()}
    found = {}
    for series in metric.value:
        assert isinstance(series, vim.PerformanceManager.IntSeries)
        assert series.id.instance == ""
        assert len(series.value) == len(metric.sampleInfo)
        found[names[series.id.counterId]] = list(series.value)
    return found


def stamps(metric: Any) -> list[datetime]:
    return [sample.timestamp for sample in metric.sampleInfo]


def assert_spaced(metric: Any, interval: int = INTERVAL) -> None:
    """Samples ``interval`` s apart, oldest first, in whole seconds."""
    assert {sample.interval for sample in metric.sampleInfo} == {interval}
    times = stamps(metric)
    assert all(t.microsecond == 0 for t in times)
    steps = [b - a for a, b in pairwise(times)]
    assert steps == [timedelta(seconds=interval)] * (len(times) - 1)


def test_query_perf_gives_exactly_the_values_set(instance: Any, counters: dict[str, int]) -> None:
    metric = query(instance, counters, VM, NAMES)
    now = datetime.now(UTC)
    found = values(metric, counters)
    assert list(found) == NAMES  # the metricIds' order
    assert found == SERIES
    assert len(metric.sampleInfo) == N
    assert_spaced(metric)
    newest = stamps(metric)[-1]
    assert newest.utcoffset() == timedelta(0)
    assert timedelta(0) <= now - newest < timedelta(seconds=5)


def test_start_time_is_exclusive_and_end_time_inclusive(
    instance: Any, counters: dict[str, int]
) -> None:
    for _ in range(5):  # stamps move with the clock: retry if a second began in between
        full = stamps(query(instance, counters, VM, NAMES))
        after = query(instance, counters, VM, NAMES, startTime=full[1])
        between = query(instance, counters, VM, NAMES, startTime=full[1], endTime=full[4])
        if stamps(query(instance, counters, VM, NAMES)) == full:
            break
    else:
        pytest.fail("the simulator's clock kept moving between the queries")
    assert stamps(after) == full[2:]  # startTime cuts the oldest two, itself included
    assert values(after, counters) == {name: v[2:] for name, v in SERIES.items()}
    assert stamps(between) == full[2:5]  # endTime kept
    assert values(between, counters) == {name: v[2:5] for name, v in SERIES.items()}
    assert_spaced(between)


def test_max_sample_keeps_the_newest(instance: Any, counters: dict[str, int]) -> None:
    newest = query(instance, counters, VM, NAMES, maxSample=3)
    assert values(newest, counters) == {name: v[3:] for name, v in SERIES.items()}
    assert len(newest.sampleInfo) == 3
    assert_spaced(newest)
    assert datetime.now(UTC) - stamps(newest)[-1] < timedelta(seconds=5)
    two = datetime.now(UTC) - timedelta(seconds=INTERVAL + 10)  # keeps the newest two
    cut = query(instance, counters, VM, NAMES, maxSample=3, startTime=two)  # cut, then limited
    assert values(cut, counters) == {name: v[4:] for name, v in SERIES.items()}
    everything = query(instance, counters, VM, NAMES, maxSample=N + 4)
    assert values(everything, counters) == SERIES


def test_a_counter_not_set_gives_zeros(instance: Any, counters: dict[str, int]) -> None:
    metric = query(instance, counters, VM, ["cpu.usage.average", NOT_SET, "disk.read.average"])
    found = values(metric, counters)
    assert list(found) == ["cpu.usage.average", NOT_SET, "disk.read.average"]
    assert found[NOT_SET] == [0] * N
    assert found["cpu.usage.average"] == SERIES["cpu.usage.average"]
    assert found["disk.read.average"] == SERIES["disk.read.average"]
    every = query(instance, counters, VM, NAMES, instance_name="*")  # answered as ""
    assert values(every, counters) == SERIES
    per_cpu = query(instance, counters, VM, ["cpu.usage.average"], instance_name="0")
    assert [(s.id.instance, list(s.value)) for s in per_cpu.value] == [("0", [0] * N)]


def test_a_vm_without_series_gets_the_simulators_answer(
    instance: Any, counters: dict[str, int]
) -> None:
    names = ["cpu.usage.average", "mem.active.average"]
    metric = query(instance, counters, UNSET, names, maxSample=5)
    assert [s.id.counterId for s in metric.value] == [counters[name] for name in names]
    assert len(metric.sampleInfo) == 5
    assert all(len(s.value) == 5 for s in metric.value)
    times = stamps(metric)
    assert times == sorted(times, reverse=True)  # the simulator's order: newest first
    perf = instance.content.perfManager
    ids = [vim.PerformanceManager.MetricId(counterId=counters[name], instance="")
           for name in names]  # fmt: skip
    both = perf.QueryPerf(querySpec=[
        vim.PerformanceManager.QuerySpec(entity=find_vm(instance, VM), metricId=ids,
                                         intervalId=INTERVAL),
        vim.PerformanceManager.QuerySpec(entity=find_vm(instance, UNSET), metricId=ids,
                                         intervalId=INTERVAL, maxSample=4)])  # fmt: skip
    assert values(both[0], counters) == {name: SERIES[name] for name in names}
    assert len(both[1].sampleInfo) == 4
    # the rest of the PerformanceManager is the simulator's (QueryPerfCounter the harness's:
    # the simulator's panics)
    [info] = perf.QueryPerfCounter(counterId=[counters["cpu.usage.average"]])
    assert (info.groupInfo.key, info.nameInfo.key, info.rollupType) == ("cpu", "usage", "average")
    with pytest.raises(vmodl.fault.InvalidArgument):
        perf.QueryPerfCounter(counterId=[counters["cpu.usage.average"], 99999])
    available = perf.QueryAvailablePerfMetric(entity=find_vm(instance, VM), intervalId=INTERVAL)
    assert counters["cpu.usage.average"] in {m.counterId for m in available}


def test_setting_again_replaces_the_series(
    sim: Vcsim, instance: Any, counters: dict[str, int]
) -> None:
    set_perf(sim, OTHER, {"cpu.usage.average": [1, 2, 3, 4], "mem.active.average": [5, 6, 7, 8]})
    set_perf(sim, OTHER, {"cpu.usage.average": [70, 80, 90]}, interval_s=300)
    metric = query(instance, counters, OTHER, ["cpu.usage.average", "mem.active.average"])
    assert values(metric, counters) == {"cpu.usage.average": [70, 80, 90],
                                        "mem.active.average": [0, 0, 0]}  # fmt: skip
    assert_spaced(metric, 300)
    assert values(query(instance, counters, VM, NAMES), counters) == SERIES  # its own


def post(sim: Vcsim, query: str, body: bytes | None, method: str = "POST") -> tuple[int, str]:
    """The status and text of /vcsim-test/perf?``query``."""
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    url = f"https://{sim.host}:{sim.port}/vcsim-test/perf?{query}"
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_bad_bodies_and_an_unknown_vm_are_refused(
    sim: Vcsim, instance: Any, counters: dict[str, int]
) -> None:
    good = {"interval_s": INTERVAL, "counters": {"cpu.usage.average": [1, 2]}}
    status, text = post(sim, f"vm={VM}", json.dumps(good).encode())
    assert (status, json.loads(text)) == (200, {"vm": VM, "samples": 2})
    set_perf(sim, VM, SERIES)
    uneven = {"cpu.usage.average": [1, 2], "mem.active.average": [3]}
    bad: list[object] = [
        {"interval_s": INTERVAL, "counters": uneven},
        {"interval_s": INTERVAL, "counters": {"cpu.nothing.average": [1]}},  # no such counter
        {"interval_s": INTERVAL, "counters": {"cpu.usage": [1]}},  # no rollup
        {"interval_s": INTERVAL, "counters": {}},
        {"interval_s": INTERVAL, "counters": {"cpu.usage.average": []}},
        {"interval_s": INTERVAL},
        {"interval_s": 0, "counters": {"cpu.usage.average": [1]}},
        {"counters": {"cpu.usage.average": [1]}},  # no interval_s
        {"interval_s": INTERVAL, "counters": {"cpu.usage.average": [1.5]}},
        {"interval_s": INTERVAL, "counters": {"cpu.usage.average": ["1"]}},
        {"interval_s": INTERVAL, "counters": {"cpu.usage.average": [1]}, "extra": 1},
        [1, 2],
    ]  # fmt: skip
    for body in bad:
        status, text = post(sim, f"vm={VM}", json.dumps(body).encode())
        assert status == 400, (body, status, text)
    for raw in (b"", b"{", b'{"interval_s": 20, "counters": {"cpu.usage.average": [1]}} x'):
        assert post(sim, f"vm={VM}", raw)[0] == 400, raw
    assert post(sim, "", json.dumps(good).encode())[0] == 400  # no vm=
    status, text = post(sim, "vm=NoSuchVM", json.dumps(good).encode())
    assert (status, text.strip()) == (404, 'perf: no VM "NoSuchVM"')
    assert post(sim, f"vm={VM}", None, method="GET")[0] == 405
    with pytest.raises(AssertionError, match=r"HTTP 404: perf: no VM"):
        set_perf(sim, "NoSuchVM", SERIES)
    with pytest.raises(AssertionError, match=r"HTTP 400: .*cpu\.nothing\.average"):
        set_perf(sim, VM, {"cpu.nothing.average": [1]})
    assert values(query(instance, counters, VM, NAMES), counters) == SERIES  # unchanged
