"""Wave planning: place VMs, schedule their migrations under the fleet's limits, cut the
schedule into waves, and draw it. Pure: no host, store or network is touched.

The entry points (docs/planning.md):

- ``load_plan(path) -> PlanSpec`` / ``parse_plan(text, source) -> PlanSpec``: read and check
  a plan file (``BadInputError``, exit 2, one ``file:line: field: problem`` per problem);
- ``plan(spec, method="auto", time_limit_s=10.0) -> Schedule``: the schedule
  (``PlanInfeasibleError``, a ``BadInputError``, when it cannot be done);
- ``schedule_to_dict`` / ``schedule_from_dict``: the JSON form, and back;
- ``write_gantt(schedule, path, actual=None)``: ``.html`` (inline SVG) or ``.png``.
"""

from vmferry.plan.gantt import render_html, render_png, write_gantt
from vmferry.plan.model import (
    PlanInfeasibleError,
    Schedule,
    ScheduledMigration,
    TransferEstimate,
    Wave,
    schedule_from_dict,
    schedule_to_dict,
)
from vmferry.plan.placement import Placement, place
from vmferry.plan.schedule import CPSAT_AUTO_MAX_VMS, Method, plan
from vmferry.plan.schema import PlanSpec, load_plan, parse_plan, validate_spec

__all__ = [
    "CPSAT_AUTO_MAX_VMS",
    "Method",
    "Placement",
    "PlanInfeasibleError",
    "PlanSpec",
    "Schedule",
    "ScheduledMigration",
    "TransferEstimate",
    "Wave",
    "load_plan",
    "parse_plan",
    "place",
    "plan",
    "render_html",
    "render_png",
    "schedule_from_dict",
    "schedule_to_dict",
    "validate_spec",
    "write_gantt",
]
