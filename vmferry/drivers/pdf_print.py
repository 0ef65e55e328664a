"""Print an HTML document to PDF with Chromium headless (Debian's ``chromium``; `make
install` installs it): the console's reports as downloadable files.

The document is written to a private temporary directory and printed from there
(``file://``) with a throwaway profile; it must be self-contained (its styles inline, no
network: nothing is fetched). Chromium's sandbox cannot run as root, so it is turned off
when vmferry runs as root: the document printed is vmferry's own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vmferry.drivers.process import run_tool
from vmferry.errors import ToolError

__all__ = ["CHROMIUM_NAMES", "find_chromium", "print_pdf"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    """The Chromium to print with; :class:`ToolError` naming the fix when there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ToolError("Chromium is not installed (the reports' PDFs are printed with it); "
                    "`make install` or `apt-get install chromium` installs it")  # fmt: skip


def print_pdf(html: str, *, chromium: str | None = None, timeout_s: float = 90) -> bytes:
    """``html`` printed to PDF (A4, no header or footer); :class:`ToolError` when Chromium
    fails or writes nothing."""
    binary = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="vmferry-pdf-") as folder:
        root = Path(folder)
        source, target = root / "report.html", root / "report.pdf"
        source.write_text(html, encoding="utf-8")
        argv = [binary, "--headless", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--no-pdf-header-footer",
                f"--user-data-dir={root / 'profile'}", f"--crash-dumps-dir={root}",
                f"--print-to-pdf={target}", source.as_uri()]  # fmt: skip
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")
        run_tool(argv, timeout_s=timeout_s)
        if not target.exists() or target.stat().st_size == 0:
            raise ToolError(f"{binary} printed no PDF")
        return target.read_bytes()
