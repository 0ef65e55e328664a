"""Pure: whether a live move's stream is encrypted, and what to say when it cannot be."""

from __future__ import annotations

from vmferry.model import Finding, Severity
from vmferry.model.migration import TlsMode

FINDING_ID = "migration.tls-unavailable"


def tls_decision(
    mode: TlsMode, source: str, source_tls: bool, destination: str, destination_tls: bool
) -> tuple[bool, Finding | None]:
    """(encrypt the stream, the finding to report): both hosts need migration certificates;
    without them ``required`` blocks the move and ``preferred`` moves in the clear, saying so.
    """
    if mode is TlsMode.OFF:
        return False, None
    if source_tls and destination_tls:
        return True, None
    lacking = [name for name, has in ((source, source_tls), (destination, destination_tls))
               if not has]  # fmt: skip
    verb = "has" if len(lacking) == 1 else "have"
    why = f"{' and '.join(lacking)} {verb} no migration certificates"
    fix = ("give both hosts QEMU migration certificates (qemu.conf's "
           "migrate_tls_x509_cert_dir, docs/hosts.md) and register them with "
           "`vmferry hosts add ... --migration-tls`")  # fmt: skip
    if mode is TlsMode.REQUIRED:
        return False, Finding(FINDING_ID, Severity.BLOCKER,
                              f"an encrypted stream is required, but {why}",
                              f"{fix}, or move with --tls preferred or off")  # fmt: skip
    return False, Finding(FINDING_ID, Severity.INFO,
                          f"the migration stream will not be encrypted: {why}", fix)  # fmt: skip
