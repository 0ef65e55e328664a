"""Which images ``qemu-nbd`` is asked to serve during a test (the in-place reads start none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmferry.drivers import verified_copy


def served_images(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the images qemu-nbd is asked to serve from now on."""
    served: list[str] = []
    serve = verified_copy.qemu_nbd.serve

    def counted(image: Path, *args: Any, **kw: Any) -> Any:
        served.append(image.name)
        return serve(image, *args, **kw)

    monkeypatch.setattr(verified_copy.qemu_nbd, "serve", counted)
    return served
