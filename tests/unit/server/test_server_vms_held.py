"""A VM libvirt holds for a migration job (``VmRecord.devices_read`` False: a post-copy
running, or broken off and kept for libvirt's resume): ``GET /vms`` says so, the client reads
it back, and the inventory table names it instead of listing no disks (the console's VM
page: tests/unit/console/test_console_pages.py)."""

from __future__ import annotations

from dataclasses import replace

from conftest import FLEET, Api

from vmferry.cli.hosts_cmd import inventory_table
from vmferry.client.api import _vm_record
from vmferry.model import VmRecord


def held(record: VmRecord) -> VmRecord:
    """As the driver lists a held VM: no devices."""
    return replace(record, spec=replace(record.spec, disks=(), nics=()), devices_read=False)


def test_a_held_vm_says_so_through_the_api_and_reads_back(api: Api) -> None:
    split = held(FLEET[2])  # db1 on kvm2
    api.inventory.records = [FLEET[0], split]
    page = api.client.get("/api/v1/vms", headers=api.as_("viewer")).json()
    items = {i["name"]: i for i in page["items"]}
    assert (items["db1"]["devices_read"], items["web1"]["devices_read"]) == (False, True)
    assert _vm_record(items["db1"]) == split
    assert _vm_record(items["web1"]) == FLEET[0]
    one = api.client.get("/api/v1/vms/db1", headers=api.as_("viewer")).json()
    assert one["devices_read"] is False and one["spec"]["disks"] == []
    older = {k: v for k, v in items["web1"].items() if k != "devices_read"}
    assert _vm_record(older).devices_read is True  # a server from before the field


def test_the_inventory_table_names_a_held_vms_devices_as_not_read() -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(inventory_table([FLEET[0], held(FLEET[2])]))
    rows = [line for line in console.export_text().splitlines() if "db1" in line]
    assert len(rows) == 1 and "(not read: held for a migration)" in rows[0], rows
