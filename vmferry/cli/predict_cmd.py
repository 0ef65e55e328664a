"""`vmferry predict VM --to HOST`: what a live migration would take, before it runs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from vmferry.assess.stream_features import MAX_PARALLEL, validate
from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api
from vmferry.model.migration import Compression
from vmferry.predict.strategy import choose_strategy
from vmferry.service.predict import PredictReport, predict_migration, prediction_json
from vmferry.service.rehearse import rehearsed_boots
from vmferry.store.db import open_store

MIB = 2**20


def predict(
    vm: str = typer.Argument(..., help="The running VM to predict a move of."),
    to: str = typer.Option(..., "--to", help="The registered destination host."),
    max_downtime_ms: int = typer.Option(
        300, "--max-downtime-ms", min=10, max=60_000, help="The downtime the VM tolerates."
    ),
    bandwidth_mib_s: int | None = typer.Option(
        None,
        "--bandwidth-mib-s",
        min=1,
        help="The migration bandwidth (default: the lab's "
        "link for lab hosts, else an assumed 1 Gbit/s).",
    ),
    parallel: int = typer.Option(
        0,
        "--parallel",
        min=0,
        max=MAX_PARALLEL,
        help="The move's multifd channels, as `vmferry migrate --parallel`.",
    ),
    compression: Annotated[
        Compression,
        typer.Option(
            "--compress",
            help="The move's compression, as `vmferry migrate --compress`: for zstd the ratio "
            "is measured on 8 MiB of the guest's memory (XBZRLE is not modelled).",
        ),
    ] = Compression.NONE,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predict total time, the guest's pause, bytes and whether pre-copy converges
    (measures ~1 s).

    JSON: {"vm", "destination", "converges", "total_time_ms", "guest_pause_ms",
    "downtime_ms", "transferred_bytes", "inputs": {"memory_bytes", "dirty_rate_bytes_s",
    "link_bytes_s", "zero_fraction", "downtime_limit_ms", "channels",
    "compression_ratio"}}.
    """
    validate(parallel, compression)
    api = remote_api()
    if api is not None:
        with api:
            doc = api.predict(vm, to, max_downtime_ms=max_downtime_ms,
                              bandwidth_mib_s=bandwidth_mib_s, parallel=parallel,
                              compression=compression.value)  # fmt: skip
            source = "" if json_out else api.vm(doc["vm"]).host
        if json_out:
            print_json(doc)
            return
        console.print(remote_table(doc, source))
        return
    report = predict_migration(
        vm, to, max_downtime_ms=max_downtime_ms, bandwidth_mib_s=bandwidth_mib_s,
        parallel=parallel, compression=compression,
    )  # fmt: skip
    if json_out:
        print_json(prediction_json(report))
        return
    boot_ms = rehearsed_boots(open_store()).get(report.vm)  # its last rehearsal's boot
    console.print(report_table(report, max_downtime_ms, boot_ms))


def report_table(report: PredictReport, max_downtime_ms: int, boot_ms: int | None = None) -> Table:
    p, i = report.prediction, report.prediction.inputs
    table = Table(
        title=f"{report.vm}: {report.source} -> {report.destination} (predicted)", show_header=False
    )
    table.add_row("converges", "yes" if p.converges else "[bold red]no[/bold red] (pre-copy alone)")
    table.add_row("total time", f"{p.total_time_ms / 1000:.1f} s")
    table.add_row("guest pause", f"{p.guest_pause_ms} ms (QEMU limit {p.qemu_limit_ms} ms)")
    table.add_row("downtime", f"{p.downtime_ms} ms, as libvirt will report it")
    table.add_row("transferred", f"{p.transferred_bytes / MIB:.0f} MiB in {len(p.rounds)} rounds")
    table.add_row("stream", _stream(i.channels, i.compression_ratio))
    table.add_row("memory", f"{i.memory_bytes / MIB:.0f} MiB, {i.zero_fraction:.0%} zero pages")
    table.add_row("dirty rate", f"{i.dirty_rate_bytes_s / MIB:.1f} MiB/s")
    table.add_row("link", f"{i.link_bytes_s / MIB:.1f} MiB/s")
    if report.escalates:
        table.add_row(
            "note", "vmferry's policy would escalate (throttle): the total is an upper bound"
        )
    choice = choose_strategy(p, max_downtime_ms, allow_postcopy=True, boot_ms=boot_ms)
    table.add_row("strategy", f"{choice.strategy}: {choice.reason}")
    if boot_ms is not None:
        table.add_row("rehearsed boot", f"{boot_ms / 1000:.1f} s (its last `vmferry rehearse`)")
    for key, basis in report.basis.items():
        table.add_row(f"[dim]{key}[/dim]", f"[dim]{basis}[/dim]")
    return table


def remote_table(doc: dict[str, Any], source: str) -> Table:
    """The rows of :func:`report_table` that the server's answer (the `--json` document)
    holds: not the QEMU limit, the rounds, the strategy, the escalation note nor the basis
    of each input, which POST /predictions does not answer."""
    i = doc["inputs"]
    table = Table(
        title=f"{doc['vm']}: {source} -> {doc['destination']} (predicted)", show_header=False
    )
    table.add_row(
        "converges", "yes" if doc["converges"] else "[bold red]no[/bold red] (pre-copy alone)"
    )
    table.add_row("total time", f"{doc['total_time_ms'] / 1000:.1f} s")
    table.add_row("guest pause", f"{doc['guest_pause_ms']} ms")
    table.add_row("downtime", f"{doc['downtime_ms']} ms, as libvirt will report it")
    table.add_row("transferred", f"{doc['transferred_bytes'] / MIB:.0f} MiB")
    table.add_row("stream", _stream(i["channels"], i["compression_ratio"]))
    table.add_row(
        "memory", f"{i['memory_bytes'] / MIB:.0f} MiB, {i['zero_fraction']:.0%} zero pages"
    )
    table.add_row("dirty rate", f"{i['dirty_rate_bytes_s'] / MIB:.1f} MiB/s")
    table.add_row("link", f"{i['link_bytes_s'] / MIB:.1f} MiB/s")
    return table


def _stream(channels: int, ratio: float) -> str:
    way = f"{channels} multifd channels" if channels >= 2 else "the single stream"
    return way + (f", compressed to {ratio:.0%} of the non-zero memory" if ratio < 1 else "")
