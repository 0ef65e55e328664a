"""Turn model dataclasses into plain JSON-ready values (the documented --json schemas)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Recursively convert dataclasses, enums, tuples and dicts into JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
