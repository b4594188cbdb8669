"""The provider's own failures, and the one place they become ``error`` replies.

::

    ProviderError (a KilnError)     a request the provider could not carry out; .code goes on the wire
     +-- DockerFailed               container_failed: the engine refused, or could not be reached
     +-- ImageMissing               image_not_found: the image is not on this host
     +-- PathMissing                file_not_found: no such file or folder in the container
     +-- NotAFile                   not_a_file: a folder where a file is needed (or the reverse)
     +-- TransferBroken             transfer_failed: a stream broke off or had the wrong size
     +-- BadPath                    bad_path: a path that is not normalised, or an upload's outside the volume
     +-- ImageCorrupt               image_corrupt: an image blob's bytes do not match its digest or size
     +-- ImageTooLarge              image_too_large: an image would take more than the provider keeps for images
     +-- VolumeFailed               container_failed: the storage a container rents could not be made
     |                              (.reason: unavailable - no root, loop devices or mkfs here, or
     |                              Docker does not see the mount; no_room - the disk, or what the
     |                              provider offers, cannot hold it; too_many - as many containers
     |                              as the provider runs at most)
     +-- AgentViolation             container_failed: the container's agent sent a frame that breaks
     |                              its protocol (.reason: frame_too_long, frame_too_short,
     |                              unknown_type, bad_payload)
     +-- AgentMisuse                internal: this side built a message the agent protocol cannot carry

Whatever a request raises is answered by :func:`error_reply`: a ProviderError or any other
:class:`~kiln.protocol.errors.KilnError` keeps its code, a cancellation is ``cancelled``,
anything else ``internal``. Its text is clipped to what the protocol carries, so building
the reply can never fail.
"""

from __future__ import annotations

import asyncio

from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import KilnError
from kiln.protocol.messages import Error, clip


class ProviderError(KilnError):
    pass


class DockerFailed(ProviderError):
    default_code = ErrorCode.CONTAINER_FAILED


class ImageMissing(ProviderError):
    default_code = ErrorCode.IMAGE_NOT_FOUND


class PathMissing(ProviderError):
    default_code = ErrorCode.FILE_NOT_FOUND


class NotAFile(ProviderError):
    default_code = ErrorCode.NOT_A_FILE


class TransferBroken(ProviderError):
    default_code = ErrorCode.TRANSFER_FAILED


class BadPath(ProviderError):
    default_code = ErrorCode.BAD_PATH


class ImageCorrupt(ProviderError):
    default_code = ErrorCode.IMAGE_CORRUPT


class ImageTooLarge(ProviderError):
    """An image whose layers would take more than this provider keeps for images (its cache budget)."""

    default_code = ErrorCode.IMAGE_TOO_LARGE


class VolumeFailed(ProviderError):
    """A container's volume could not be made; ``reason`` is a stable word a program can branch on."""

    default_code = ErrorCode.CONTAINER_FAILED

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AgentViolation(ProviderError):
    """What the agent sent is not its protocol; ``reason`` is a stable word a program can branch on."""

    default_code = ErrorCode.CONTAINER_FAILED

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(f"the container's agent broke its protocol: {message}")
        self.reason = reason


class AgentMisuse(ProviderError):
    """A message for the agent that its protocol cannot carry (a local mistake, never sent)."""


def error_reply(re: int, error: BaseException) -> Error:
    """The ``error`` reply to request ``re`` that failed with ``error``."""
    if isinstance(error, KilnError):
        code, text = error.code, error.message
    elif isinstance(error, asyncio.CancelledError):
        code, text = ErrorCode.CANCELLED, "cancelled"
    else:
        code, text = ErrorCode.INTERNAL, f"{type(error).__name__}: {error}"
    return Error(type="error", re=re, code=code, message=clip(text))
