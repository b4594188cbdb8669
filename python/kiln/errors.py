"""Every error Kiln raises, under one root.

::

    KilnError                      .code: a stable ErrorCode shared with the protocol
     +-- UsageError                the caller's own mistake, found before anything is sent
     |    +-- InvalidPath          a container path that is relative or holds '..'
     +-- ProtocolError             a peer broke protocol kiln.v1 (or we did, and it said so)
     |    +-- UnsupportedVersion   the hub speaks another major version
     +-- ConnectionClosed          the connection to the hub is gone
     +-- Unauthorized              the hub refused our token
     +-- NoMatch                   no provider meets the demand (the message names the constraint)
     +-- ImageNotFound             the provider does not hold the image
     +-- ActivityError             something went wrong inside a rented activity
     |    +-- ProviderLost         the provider vanished; the activity is gone
     |    +-- CommandTimeout       a command ran past its timeout and was killed (.result)
     |    +-- FileNotFound         no such file or folder in the container
     |    +-- TransferFailed       a file stream broke off
     |    +-- ContainerFailed      Docker refused an operation on the container
     +-- Cancelled                 the request was cancelled
     +-- RemoteError               any other error a peer reported (.code tells which)

:func:`error_from_code` turns an ``error`` message from the wire into the right class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kiln.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from kiln.activity import Result


class KilnError(Exception):
    """The root of every Kiln error. ``code`` is stable; branch on it or on the class."""

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code


class UsageError(KilnError):
    default_code = ErrorCode.BAD_MESSAGE


class InvalidPath(UsageError):
    default_code = ErrorCode.BAD_PATH


class ProtocolError(KilnError):
    default_code = ErrorCode.BAD_MESSAGE


class UnsupportedVersion(ProtocolError):
    default_code = ErrorCode.UNSUPPORTED_VERSION


class ConnectionClosed(KilnError):
    default_code = ErrorCode.CONNECTION_CLOSED


class Unauthorized(KilnError):
    default_code = ErrorCode.UNAUTHORIZED


class NoMatch(KilnError):
    default_code = ErrorCode.NO_MATCH


class ImageNotFound(KilnError):
    default_code = ErrorCode.IMAGE_NOT_FOUND


class ActivityError(KilnError):
    default_code = ErrorCode.CONTAINER_FAILED


class ProviderLost(ActivityError):
    default_code = ErrorCode.PROVIDER_LOST


class CommandTimeout(ActivityError):
    default_code = ErrorCode.TIMEOUT

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result


class FileNotFound(ActivityError):
    default_code = ErrorCode.FILE_NOT_FOUND


class TransferFailed(ActivityError):
    default_code = ErrorCode.TRANSFER_FAILED


class ContainerFailed(ActivityError):
    default_code = ErrorCode.CONTAINER_FAILED


class Cancelled(KilnError):
    default_code = ErrorCode.CANCELLED


class RemoteError(KilnError):
    pass


_BY_CODE: dict[ErrorCode, type[KilnError]] = {
    ErrorCode.BAD_JSON: ProtocolError,
    ErrorCode.BAD_MESSAGE: ProtocolError,
    ErrorCode.UNKNOWN_TYPE: ProtocolError,
    ErrorCode.MESSAGE_TOO_LARGE: ProtocolError,
    ErrorCode.BAD_FRAME: ProtocolError,
    ErrorCode.OUT_OF_ORDER: ProtocolError,
    ErrorCode.DUPLICATE_ID: ProtocolError,
    ErrorCode.FLOW_CONTROL: ProtocolError,
    ErrorCode.UNKNOWN_STREAM: ProtocolError,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.BAD_PATH: InvalidPath,
    ErrorCode.NO_MATCH: NoMatch,
    ErrorCode.IMAGE_NOT_FOUND: ImageNotFound,
    ErrorCode.PROVIDER_LOST: ProviderLost,
    ErrorCode.UNKNOWN_ACTIVITY: ActivityError,
    ErrorCode.FILE_NOT_FOUND: FileNotFound,
    ErrorCode.NOT_A_FILE: FileNotFound,
    ErrorCode.TRANSFER_FAILED: TransferFailed,
    ErrorCode.CONTAINER_FAILED: ContainerFailed,
    ErrorCode.CANCELLED: Cancelled,
}


def error_from_code(code: str, message: str) -> KilnError:
    """The exception for an ``error`` message received with ``code`` (unknown codes: RemoteError)."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return RemoteError(f"{message} [{code}]", ErrorCode.INTERNAL)
    return _BY_CODE.get(known, RemoteError)(message, known)
