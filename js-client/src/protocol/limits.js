/**
 * Default limits of protocol kiln.v1 (`python/kiln/protocol/limits.py`); the hub
 * announces the ones in force in `welcome`, and those are the ones a client obeys.
 * @module
 */

/** Most file data in one DATA frame. */
export const CHUNK_BYTES = 256 * 1024;
/** Largest JSON text frame answered with an error instead of a close. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Largest frame of any kind; the connection is closed (1009) above it. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Credit a receiver grants a stream at once: 16 x 256 KiB = 4 MiB in flight. */
export const WINDOW_CHUNKS = 16;
export const MAX_WINDOW = 64;
/** Requests one peer may have open at once. */
export const MAX_PENDING = 256;
/** Streams one peer may have open at once. */
export const MAX_STREAMS = 32;
/** stdout (and separately stderr) an exec returns; the rest is cut and flagged. */
export const MAX_OUTPUT_BYTES = 256 * 1024;
/**
 * The storage an activity gets when its rent names none (0): the hub reserves it, the provider
 * makes a volume of it, and a download to a file takes at most that much by default.
 */
export const DEFAULT_STORAGE = 256 * 2 ** 20;
