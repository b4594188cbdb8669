"""Default limits of protocol kiln.v1; the hub announces the ones in force in ``welcome``."""

from __future__ import annotations

from typing import Final

CHUNK_BYTES: Final = 256 * 1024
"""Most file data in one DATA frame."""
MAX_MESSAGE_BYTES: Final = 1024 * 1024
"""Largest JSON text frame answered with an error instead of a close."""
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
"""Largest frame of any kind; the connection is closed (1009) above it."""
WINDOW_CHUNKS: Final = 16
"""Credit a receiver grants a stream at once: 16 x 256 KiB = 4 MiB in flight."""
MAX_WINDOW: Final = 64
MAX_PENDING: Final = 256
"""Requests one peer may have open at once."""
MAX_STREAMS: Final = 32
"""Streams one peer may have open at once."""
MAX_OUTPUT_BYTES: Final = 256 * 1024
"""stdout (and separately stderr) an exec returns; the rest is cut and flagged."""
OUTBOX_BYTES: Final = 64 * 1024 * 1024
"""Bytes queued toward one slow peer before the hub gives up on it."""
OUTPUT_WINDOW: Final = 16
"""The first credit of an exec's output stream (1.2) when the exec names none; at most ``max_window``."""
DEFAULT_STORAGE: Final = 256 * 2**20
"""The storage an activity gets when its rent names none (0): the hub reserves it, the provider
makes a volume of it, and a client's download takes at most that much by default."""
MIN_STORAGE: Final = 2**20
"""The least storage an activity gets (a provider's smallest volume): a smaller rent is given, and
reserved, this much."""
