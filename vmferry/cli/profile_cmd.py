"""`vmferry profile VM` / `vmferry profile --host H`: sample workloads, right-size."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json
from vmferry.client.remote import remote_api
from vmferry.errors import BadInputError, NoRemoteFormError, StoppedFollowingError
from vmferry.model.workload import ProfileSample
from vmferry.predict.profile import ProfileSummary, Stat
from vmferry.predict.rightsize import RightSizing
from vmferry.service.profile import ProfileRun
from vmferry.service.profile import profile as profile_service

if TYPE_CHECKING:
    from vmferry.client.api import ApiClient

MIB = 2**20
NET = "{:.2f}"


def profile(
    vm: str | None = typer.Argument(
        None, help="The running VM to profile, or vsphere://SOURCE/VM (vCenter's statistics)."
    ),
    host: str | None = typer.Option(None, "--host", help="Profile every running VM of it."),
    duration: float | None = typer.Option(
        None,
        "--duration",
        help="Seconds to sample for (60); for vsphere:// the last seconds vCenter measured "
        "(3600, at most).",
    ),
    interval: float = typer.Option(1, "--interval", help="Seconds between samples."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Sample CPU, memory, disk, network and dirty rate into the store; recommend a size.

    A vSphere VM (vsphere://SOURCE/VM) is not sampled from now on: its last hour of
    vCenter's realtime statistics (20 s each) is read at once (no dirty rate: vSphere has
    none). Ctrl-C stops early and keeps what was sampled. JSON: one object per VM (a list with
    --host): {"vm", "host", "samples", "interrupted", "first_at", "last_at", "stats":
    {metric: {"mean", "p95", "max"}}, "zero_fraction", "rightsizing": {"vcpus",
    "memory_bytes", "recommended_vcpus", "recommended_memory_bytes", "cpu_p95",
    "memory_used_p95_bytes", "oversized", "overutilised", "reason"}}.
    """

    def show(sample: ProfileSample) -> None:
        cpu = sample.get("cpu_share") or 0.0
        dirty = sample.get("dirty_rate_bytes_s")
        dirty_text = "-" if dirty is None else f"{dirty / MIB:.1f} MiB/s"
        err_console.print(
            f"[dim]•[/dim] {sample.taken_at} {sample.vm}: CPU {cpu:.0%}, dirty {dirty_text}",
            highlight=False,
        )

    if (vm is None) == (host is None):
        raise BadInputError("profile either one VM or one host (--host), not both or neither")
    if vm is not None and vm.startswith("vsphere://"):
        runs = [_profile_vsphere(vm, duration, interval)]
    else:
        api = remote_api()
        if api is not None:
            with api:
                runs = profile_remote(api, vm, host, duration or 60, interval)
        else:
            runs = profile_service(
                vm, host=host, duration_s=duration or 60, interval_s=interval, on_sample=show
            )
    if json_out:
        docs = [run_json(r) for r in runs]
        print_json(docs if host is not None else docs[0])
        return
    console.print(runs_table(runs))
    for run in runs:
        flag = (
            "[bold red]overutilised[/bold red] "
            if run.summary.rightsizing.overutilised
            else "[yellow]oversized[/yellow] "
            if run.summary.rightsizing.oversized
            else ""
        )
        console.print(f"{run.vm}: {flag}{run.summary.rightsizing.reason}", highlight=False)
    if any(r.interrupted for r in runs):
        err_console.print("interrupted: the samples taken so far are stored")


def _profile_vsphere(ref: str, duration: float | None, interval: float) -> ProfileRun:
    """`vmferry profile vsphere://SOURCE/VM`: vCenter's statistics of the VM."""
    from vmferry.cli.sources_cmd import password_for
    from vmferry.service.vsphere_profile import REALTIME_KEPT_S, profile_vsphere
    from vmferry.service.vsphere_sources import get_source
    from vmferry.sources.vsphere_vm import parse_vsphere_vm_ref

    if interval != 1:
        raise BadInputError("--interval is vCenter's own for vsphere:// (a sample every 20 s)")
    if remote_api() is not None:
        raise NoRemoteFormError("profile vsphere:// has no remote form yet: unset VMFERRY_URL")
    source, name = parse_vsphere_vm_ref(ref)
    password = password_for(get_source(source))
    run = profile_vsphere(source, name, password, since_s=duration or REALTIME_KEPT_S)
    err_console.print(f"[dim]•[/dim] {name}: {run.summary.samples} samples of vCenter's "
                      f"statistics, {run.summary.first_at} to {run.summary.last_at}",
                      highlight=False)  # fmt: skip
    return run


def run_json(run: ProfileRun) -> dict[str, Any]:
    s = run.summary
    return {
        "vm": run.vm,
        "host": run.host,
        "samples": s.samples,
        "interrupted": run.interrupted,
        "first_at": s.first_at,
        "last_at": s.last_at,
        "stats": {k: {"mean": v.mean, "p95": v.p95, "max": v.max} for k, v in s.stats.items()},
        "zero_fraction": s.zero_fraction,
        "rightsizing": {
            "vcpus": s.rightsizing.vcpus,
            "memory_bytes": s.rightsizing.memory_bytes,
            "recommended_vcpus": s.rightsizing.recommended_vcpus,
            "recommended_memory_bytes": s.rightsizing.recommended_memory_bytes,
            "cpu_p95": s.rightsizing.cpu_p95,
            "memory_used_p95_bytes": s.rightsizing.memory_used_p95_bytes,
            "oversized": s.rightsizing.oversized,
            "overutilised": s.rightsizing.overutilised,
            "reason": s.rightsizing.reason,
        },
    }


def _p95(run: ProfileRun, key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    stat = run.summary.stats.get(key)
    return "-" if stat is None else fmt.format(stat.p95 / scale)


def runs_table(runs: list[ProfileRun]) -> Table:
    table = Table(title="workload profile (p95 over the samples)")
    for column in (
        "VM",
        "samples",
        "CPU",
        "memory in use",
        "disk r/w MiB/s",
        "disk r/w IOPS",
        "net rx/tx MiB/s",
        "dirty MiB/s",
        "zero pages",
    ):
        table.add_column(column, no_wrap=True)
    for r in runs:
        zero = r.summary.zero_fraction
        table.add_row(
            r.vm,
            str(r.summary.samples),
            _p95(r, "cpu_share", 0.01, "{:.0f}%"),
            _p95(r, "memory_used_bytes", MIB, "{:.0f} MiB"),
            f"{_p95(r, 'disk_read_bytes_s', MIB)}/{_p95(r, 'disk_write_bytes_s', MIB)}",
            f"{_p95(r, 'disk_read_ops_s', 1, '{:.0f}')}/{_p95(r, 'disk_write_ops_s', 1, '{:.0f}')}",
            f"{_p95(r, 'net_rx_bytes_s', MIB, NET)}/{_p95(r, 'net_tx_bytes_s', MIB, NET)}",
            _p95(r, "dirty_rate_bytes_s", MIB),
            "-" if zero is None else f"{zero:.0%}",
        )
    return table


# -- remote mode ----------------------------------------------------------------------------


def profile_remote(
    api: ApiClient, vm: str | None, host: str | None, duration: float, interval: float
) -> list[ProfileRun]:
    """Profile ``vm``, or every running VM of ``host``, in the server (``POST /profiles``,
    ``POST /hosts/{name}/profiles``) and follow the run: ``GET /vms/{id}/profile?since=``
    its first sample, for each VM, every ``interval`` (at least 1 s) until the server
    stops sampling them; each VM's summary (the samples are in the server's store).

    The server does not stop a run it was asked for (the API has no such request), so
    Ctrl-C stops following (exit 130) and the server goes on sampling to the end."""
    if host is not None:
        started = api.start_host_profile(host, duration_s=duration, interval_s=interval)
        vms: list[str] = list(started["vms"])
        what = f"{len(vms)} VMs on {host} ({', '.join(vms)})"
    else:
        assert vm is not None
        started = api.start_profile(vm, duration_s=duration, interval_s=interval)
        vms, what = [vm], f"{vm} on {started['host']}"
    since = started["first_sample_at"]
    err_console.print(f"[dim]•[/dim] profiling {what} in the vmferry server at {api.url} "
                      f"for {duration:g} s, from {since}", highlight=False)  # fmt: skip
    shown: dict[str, int] = {}
    docs: dict[str, dict[str, Any]] = {}
    try:
        while True:
            for name in vms:
                docs[name] = doc = api.vm_profile(name, since=since)
                if doc["samples"] != shown.get(name):
                    shown[name] = doc["samples"]
                    err_console.print(f"[dim]•[/dim] {doc['last_at']} {name}: "
                                      f"{doc['samples']} samples", highlight=False)  # fmt: skip
            if not any(doc["sampling"] for doc in docs.values()):
                break
            time.sleep(max(1.0, interval))
    except KeyboardInterrupt:
        raise StoppedFollowingError(
            f"stopped following: the server goes on profiling {what} until {duration:g} s "
            f"from {since}; `vmferry profile` cannot stop it remotely"
        ) from None
    runs = []
    for name in vms:
        summary = summary_from_json(docs[name])
        runs.append(ProfileRun(summary.vm, summary.host, (), summary))
    return runs


def summary_from_json(doc: dict[str, Any]) -> ProfileSummary:
    """A summary of the server's answer (``GET /vms/{id}/profile``)."""
    r = doc["rightsizing"]
    rightsizing = RightSizing(r["vcpus"], r["memory_bytes"], r["recommended_vcpus"],
                              r["recommended_memory_bytes"], r["cpu_p95"],
                              r["memory_used_p95_bytes"], r["oversized"], r["overutilised"],
                              r["reason"])  # fmt: skip
    stats = {k: Stat(v["mean"], v["p95"], v["max"]) for k, v in doc["stats"].items()}
    return ProfileSummary(doc["vm"], doc["host"], doc["samples"], doc["first_at"],
                          doc["last_at"], stats, doc["zero_fraction"], rightsizing)  # fmt: skip
