"""Plan files: the example loads; every problem is reported with its line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmferry.errors import BadInputError
from vmferry.plan import load_plan, parse_plan, plan
from vmferry.plan.schema import format_loc, vm_max_downtime_ms

EXAMPLE = Path(__file__).parents[2] / "data" / "plans" / "example.yaml"

GOOD = """\
version: 1
hosts:
  - {name: a, cpus: 8, memory_mb: 16384}
  - {name: b, cpus: 8, memory_mb: 16384, link_gbps: 1}
vms:
  - name: v1
    source: a
    destination: b
    memory_mb: 1024
    vcpus: 1
  - name: v2
    source: b
    memory_mb: 2048
    vcpus: 2
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(BadInputError) as info:
        parse_plan(text, "plan.yaml")
    assert info.value.exit_code == 2
    return info.value.message.splitlines()


def test_example_file_loads_and_plans() -> None:
    spec = load_plan(EXAMPLE)
    assert spec.name == "evacuate-rack-7"
    assert len(spec.vms) == 7
    assert spec.window_offsets() == [(0.0, 7200.0), (14400.0, 21600.0)]
    schedule = plan(spec, method="heuristic")
    assert {m.vm for m in schedule.migrations} == {v.name for v in spec.vms}


def test_good_plan_defaults() -> None:
    spec = parse_plan(GOOD)
    assert spec.defaults.max_downtime_ms == 300
    assert spec.fleet.bandwidth_budget_gbps is None
    assert spec.vms[1].destination is None


def test_downtime_from_field_tag_or_default() -> None:
    spec = load_plan(EXAMPLE)
    by_name = {v.name: v for v in spec.vms}
    assert vm_max_downtime_ms(by_name["db1"], spec.defaults) == 100
    assert vm_max_downtime_ms(by_name["ci1"], spec.defaults) == 1000
    assert vm_max_downtime_ms(by_name["web1"], spec.defaults) == 300


def test_value_error_names_line_and_field() -> None:
    assert errors_of(GOOD.replace("memory_mb: 2048", "memory_mb: 0")) == [
        "plan.yaml:13: vms[1].memory_mb: Input should be greater than 0"
    ]


def test_unknown_key_is_an_error() -> None:
    assert errors_of(GOOD.replace("    vcpus: 1\n", "    vcpus: 1\n    colour: red\n")) == [
        "plan.yaml:11: vms[0].colour: unknown key"
    ]


def test_missing_field_points_at_its_entry() -> None:
    assert errors_of(GOOD.replace("    vcpus: 2\n", "")) == [
        "plan.yaml:11: vms[1].vcpus: Field required"
    ]


def test_every_problem_is_listed() -> None:
    text = GOOD.replace("memory_mb: 2048", "memory_mb: -1").replace(
        "cpus: 8, memory", "cpus: x, memory", 1
    )
    lines = errors_of(text)
    assert len(lines) == 2
    assert lines[0].startswith("plan.yaml:3: hosts[0].cpus: ")
    assert lines[1].startswith("plan.yaml:13: vms[1].memory_mb: ")


def test_references_are_checked_with_lines() -> None:
    text = GOOD.replace("source: b", "source: c").replace(
        "    vcpus: 1\n", "    vcpus: 1\n    anti_affinity: [nobody]\n"
    )
    assert errors_of(text) == [
        "plan.yaml:11: vms[0].anti_affinity[0]: 'nobody' is neither a vm nor a group",
        "plan.yaml:13: vms[1].source: unknown host 'c'",
    ]


def test_destination_equal_to_source() -> None:
    assert errors_of(GOOD.replace("destination: b", "destination: a")) == [
        "plan.yaml:8: vms[0].destination: the destination is the source: nothing to move"
    ]


def test_duplicate_names_and_keys() -> None:
    assert errors_of(GOOD.replace("name: v2", "name: v1")) == [
        "plan.yaml:11: vms[1].name: vm 'v1' is listed twice"
    ]
    assert errors_of(GOOD.replace("    vcpus: 1\n", "    vcpus: 1\n    vcpus: 2\n")) == [
        "plan.yaml:11: vms[0].vcpus: duplicate key"
    ]


def test_windows() -> None:
    iso = GOOD + "windows:\n  - {start: '2025-01-01T00:00:00', end: 60}\n"
    assert errors_of(iso) == ["plan.yaml:16: windows[0]: an ISO datetime needs the plan's start_at"]
    backwards = GOOD + "windows:\n  - {start: 100, end: 50}\n"
    assert errors_of(backwards) == [
        "plan.yaml:16: windows[0].end: the window ends before it starts"
    ]
    junk = GOOD + "windows:\n  - {start: soon, end: 50}\n"
    assert errors_of(junk) == [
        "plan.yaml:16: windows[0].start: should be seconds from the plan start or an ISO datetime"
    ]
    ok = parse_plan(
        "start_at: 2025-01-01T00:00:00\n" + GOOD + "windows:\n"
        "  - {start: 2025-01-01T01:00:00, end: 7200}\n  - {start: 7000, end: 9000}\n"
    )
    assert ok.window_offsets() == [(3600.0, 9000.0)]


def test_broken_yaml_and_wrong_shapes() -> None:
    (line,) = errors_of(GOOD.replace("  - name: v2", "  - name: [v2"))
    assert line.startswith("plan.yaml:") and "not valid YAML" in line
    assert errors_of("") == ["plan.yaml:1: the plan is empty"]
    assert errors_of("- 1\n- 2\n") == ["plan.yaml:1: the plan should be a mapping"]
    assert errors_of(GOOD.replace("version: 1", "version: 2")) == [
        "plan.yaml:1: version: Input should be 1"
    ]


def test_load_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD.replace("vcpus: 1", "vcpus: 0"))
    with pytest.raises(BadInputError, match=r"^mine.yaml:10: vms\[0\].vcpus: "):
        load_plan(path)
    with pytest.raises(BadInputError, match="cannot read the plan"):
        load_plan(tmp_path / "missing.yaml")


def test_format_loc() -> None:
    assert format_loc(("vms", 3, "anti_affinity", 0)) == "vms[3].anti_affinity[0]"
    assert format_loc(()) == "(top)"
