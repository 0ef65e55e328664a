"""One exception hierarchy for vmferry; every error carries a message a user can act on.

The CLI maps each class to an exit code (DESIGN.md): 0 ok, 1 internal, 2 bad input,
3 blocked by checks, 4 migration failed with the source intact, 5 rolled back.
"""

from __future__ import annotations


class VmferryError(Exception):
    """Base of every error vmferry raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        if cause is not None:
            self.__cause__ = cause


class BadInputError(VmferryError):
    """The user asked for something that cannot be done as asked (exit 2)."""

    exit_code = 2


class NotFoundError(BadInputError):
    """A named host, VM, job or lab object does not exist."""


class AlreadyExistsError(BadInputError):
    """The thing to be created is already there."""


class HostUnreachableError(BadInputError):
    """A libvirt URI did not answer."""


class BlockedError(VmferryError):
    """Pre-flight checks found a blocker (exit 3)."""

    exit_code = 3


class MigrationFailedError(VmferryError):
    """The migration failed and the source VM is intact (exit 4)."""

    exit_code = 4


class RolledBackError(VmferryError):
    """The operation failed and was rolled back (exit 5)."""

    exit_code = 5


class LabError(VmferryError):
    """The local lab could not be built or torn down."""


class ToolError(VmferryError):
    """An external tool (ip, qemu-img, virsh ...) failed; the message carries its stderr."""
