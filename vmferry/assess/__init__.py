"""Assessments: pure decisions over facts gathered elsewhere (pre-flight checks, fit, risk)."""

from vmferry.assess.preflight import (
    CpuCheck,
    CpuVerdict,
    DiskPlacement,
    NetworkFacts,
    PoolFacts,
    PreflightFacts,
    evaluate,
)

__all__ = [
    "CpuCheck",
    "CpuVerdict",
    "DiskPlacement",
    "NetworkFacts",
    "PoolFacts",
    "PreflightFacts",
    "evaluate",
]
