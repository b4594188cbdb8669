"""Every error Kiln raises, under one root, each with the stable code the protocol carries.

::

    KilnError                      .code: a stable ErrorCode shared with the protocol
     +-- UsageError                the caller's own mistake, found before anything is sent
     |    +-- InvalidPath          a container path that is relative or holds '..'
     +-- ProtocolError             protocol kiln.v1 was broken
     |    +-- LocalProtocolError   ... by this side: a message it was about to send (never sent),
     |    |                        or one the peer refused as invalid
     |    +-- RemoteProtocolError  ... by the peer: a frame or message it sent is invalid (.re)
     |    +-- UnsupportedVersion   the two sides speak different major versions
     +-- ConnectionClosed          the connection to the hub is over: this side closed it
     |    +-- ConnectionLost       ... it broke: the hub closed it or vanished, or the network failed
     +-- Unauthorized              the hub refused our token
     +-- NoMatch                   no provider meets the demand (the message names the constraint)
     +-- ImageNotFound             the provider does not hold the image
     +-- ImageError                not an image (bad ``docker save`` archive, config and layers disagree)
     |    +-- ImageCorrupt         a blob's bytes do not match its digest or size
     |    +-- StoreFull            the hub's image store has no room for the image
     |    +-- ImageTooLarge        its layers would expand past a limit (1.4)
     +-- ActivityError             something went wrong inside a rented activity
     |    +-- ProviderLost         the provider vanished; the activity is gone
     |    +-- FileNotFound         no such file or folder in the container
     |    +-- TransferFailed       a file stream broke off
     |    +-- ContainerFailed      Docker refused an operation on the container
     |    +-- ConnectionRefused    nothing listens on the container's port a connect named (1.7)
     +-- InsufficientFunds         the requestor's credits cannot hold a rent's worst case (1.5)
 +-- BudgetExceeded            what is left of a job's budget cannot hold another activity (1.5)
 +-- Cancelled                 the request was cancelled
     +-- RemoteError               any other error a peer reported (.code tells which)

The requestor SDK adds ``CommandTimeout`` and ``CommandFailed`` (ActivityErrors carrying the
command's result), ``RetryTask``, ``TaskTimeout`` and ``TaskFailed``; the provider adds its
own failures under ``ProviderError``.
:func:`error_from_code` turns an ``error`` message from the wire into the right class.
"""

from __future__ import annotations

from typing import ClassVar

from kiln.protocol.codes import ErrorCode


class KilnError(Exception):
    """The root of every Kiln error. ``code`` is stable; branch on it or on the class.

    ``provider`` names the provider involved, when the hub said which (a failed rent).
    """

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.provider = provider


class UsageError(KilnError):
    default_code = ErrorCode.BAD_MESSAGE


class InvalidPath(UsageError):
    default_code = ErrorCode.BAD_PATH


class ProtocolError(KilnError):
    default_code = ErrorCode.BAD_MESSAGE


class LocalProtocolError(ProtocolError):
    """This side broke the protocol: caught before sending, or reported back by the peer."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. ``re`` is the id of the request its bad message carried, if readable."""

    def __init__(self, message: str, code: ErrorCode | None = None, re: int | None = None) -> None:
        super().__init__(message, code)
        self.re = re


class UnsupportedVersion(ProtocolError):
    default_code = ErrorCode.UNSUPPORTED_VERSION


class ConnectionClosed(KilnError):
    default_code = ErrorCode.CONNECTION_CLOSED


class ConnectionLost(ConnectionClosed):
    pass


class Unauthorized(KilnError):
    default_code = ErrorCode.UNAUTHORIZED


class NoMatch(KilnError):
    default_code = ErrorCode.NO_MATCH


class ImageNotFound(KilnError):
    default_code = ErrorCode.IMAGE_NOT_FOUND


class ImageError(KilnError):
    """An image cannot be stored or loaded: not a ``docker save`` archive, or one whose parts disagree."""

    default_code = ErrorCode.BAD_IMAGE


class ImageCorrupt(ImageError):
    """A blob's bytes do not match its digest or declared size."""

    default_code = ErrorCode.IMAGE_CORRUPT


class StoreFull(ImageError):
    """The hub's image store cannot make room for the image within its limit."""

    default_code = ErrorCode.STORE_FULL


class ImageTooLarge(ImageError):
    """(1.4) The image's layers would take more than a limit once extracted, or expand absurdly
    (a few KiB of tar holding a sparse file of GiBs)."""

    default_code = ErrorCode.IMAGE_TOO_LARGE


class ActivityError(KilnError):
    default_code = ErrorCode.CONTAINER_FAILED


class ProviderLost(ActivityError):
    default_code = ErrorCode.PROVIDER_LOST


class FileNotFound(ActivityError):
    default_code = ErrorCode.FILE_NOT_FOUND


class TransferFailed(ActivityError):
    default_code = ErrorCode.TRANSFER_FAILED


class ContainerFailed(ActivityError):
    default_code = ErrorCode.CONTAINER_FAILED


class ConnectionRefused(ActivityError):
    """(1.7) Nothing listens on the port of the container that a ``connect`` named."""

    default_code = ErrorCode.CONNECTION_REFUSED


class InsufficientFunds(KilnError):
    """(1.5) A rent of a priced provider whose worst-case cost the requestor's available credits
    cannot hold (or by a requestor with no account at the hub); nothing was started."""

    default_code = ErrorCode.INSUFFICIENT_FUNDS


class BudgetExceeded(KilnError):
    """(1.5) What is left of a job's budget (its group's, at the hub) cannot hold another
    activity, or ran out under one: the job stops renting and fails the tasks not done."""

    default_code = ErrorCode.BUDGET_EXCEEDED


class Cancelled(KilnError):
    default_code = ErrorCode.CANCELLED


class RemoteError(KilnError):
    pass


_BY_CODE: dict[ErrorCode, type[KilnError]] = {
    # The peer says a message of ours broke the protocol.
    ErrorCode.BAD_JSON: LocalProtocolError,
    ErrorCode.BAD_MESSAGE: LocalProtocolError,
    ErrorCode.UNKNOWN_TYPE: LocalProtocolError,
    ErrorCode.MESSAGE_TOO_LARGE: LocalProtocolError,
    ErrorCode.BAD_FRAME: LocalProtocolError,
    ErrorCode.OUT_OF_ORDER: LocalProtocolError,
    ErrorCode.DUPLICATE_ID: LocalProtocolError,
    ErrorCode.FLOW_CONTROL: LocalProtocolError,
    ErrorCode.UNKNOWN_STREAM: LocalProtocolError,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.BAD_PATH: InvalidPath,
    ErrorCode.NO_MATCH: NoMatch,
    ErrorCode.IMAGE_NOT_FOUND: ImageNotFound,
    ErrorCode.BAD_IMAGE: ImageError,
    ErrorCode.IMAGE_CORRUPT: ImageCorrupt,
    ErrorCode.STORE_FULL: StoreFull,
    ErrorCode.IMAGE_TOO_LARGE: ImageTooLarge,
    ErrorCode.PROVIDER_LOST: ProviderLost,
    ErrorCode.UNKNOWN_ACTIVITY: ActivityError,
    ErrorCode.FILE_NOT_FOUND: FileNotFound,
    ErrorCode.NOT_A_FILE: FileNotFound,
    ErrorCode.TRANSFER_FAILED: TransferFailed,
    ErrorCode.CONTAINER_FAILED: ContainerFailed,
    ErrorCode.CANCELLED: Cancelled,
    ErrorCode.CONNECTION_REFUSED: ConnectionRefused,
    ErrorCode.NOT_PUBLISHED: ActivityError,
    ErrorCode.INSUFFICIENT_FUNDS: InsufficientFunds,
    ErrorCode.BUDGET_EXCEEDED: BudgetExceeded,
}


def error_class(code: ErrorCode) -> type[KilnError]:
    """The class :func:`error_from_code` makes of an ``error`` message with ``code``."""
    return _BY_CODE.get(code, RemoteError)


def error_from_code(code: str, message: str, provider: str | None = None) -> KilnError:
    """The exception for an ``error`` message received with ``code`` (unknown codes: RemoteError)."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return RemoteError(f"{message} [{code}]", ErrorCode.INTERNAL, provider=provider)
    return error_class(known)(message, known, provider=provider)
