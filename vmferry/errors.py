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


class InUseError(BadInputError):
    """The thing to be removed is still in use (the API's 409)."""


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


# -- remote mode (VMFERRY_URL): the server's answers as the local command's errors --------
# A 404, 409, 422 or 502 from the server becomes NotFoundError, AlreadyExistsError,
# BadInputError or HostUnreachableError, the class the local command raises for the same
# failure, so the exit code is the same; the classes below are the failures only a client
# of the server has (vmferry.client.api).


class ServerUnreachableError(BadInputError):
    """The vmferry server at VMFERRY_URL did not answer (refused, unknown name, timed out):
    the setting points nowhere usable (exit 2)."""


class NotAuthenticatedError(BadInputError):
    """The server refused VMFERRY_TOKEN (401), or VMFERRY_TOKEN is not set (exit 2)."""


class ForbiddenError(BadInputError):
    """A role rule of the server refused the request (403); ``rule`` names it (exit 2)."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class ServerError(VmferryError):
    """The server failed (5xx other than an unreachable libvirt host): exit 1, as an
    unexpected error of the local command."""


class NoRemoteFormError(BadInputError):
    """The command has no form that runs through the server yet (exit 2): it never runs
    locally instead while VMFERRY_URL is set."""


class StoppedFollowingError(VmferryError):
    """Ctrl-C stopped the command line following a job that goes on in the server (exit
    130, as any interrupted command)."""

    exit_code = 130
