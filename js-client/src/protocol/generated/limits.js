// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.
// Run `make schema` after changing the models in python/kiln/protocol/.

// The default limits of protocol kiln.v1 (the hub announces those in force in `welcome`,
// and those are the ones a client obeys), and the bounds no `welcome` changes.
export const CHUNK_BYTES = 262144;
export const DEFAULT_STORAGE = 268435456;
export const HEADER_SIZE = 8;
export const MAX_EXCLUDE = 1024;
export const MAX_FRAME_BYTES = 4194304;
export const MAX_HELLO_BYTES = 73728;
export const MAX_ID = 2147483647;
export const MAX_LISTED = 1000;
export const MAX_MESSAGE_BYTES = 1048576;
export const MAX_OUTPUT_BYTES = 262144;
export const MAX_PATH_LENGTH = 4096;
export const MAX_PENDING = 256;
export const MAX_REASON_BYTES = 1024;
export const MAX_STREAM_ID = 2147483647;
export const MAX_STREAMS = 32;
export const MAX_TASK_ATTEMPT = 1000;
export const MAX_TASK_REASON = 256;
export const MAX_TEXT = 4096;
export const MAX_USAGE_ACTIVITIES = 1024;
export const MAX_WINDOW = 64;
export const MIN_STORAGE = 1048576;
export const OUTBOX_BYTES = 67108864;
export const OUTPUT_WINDOW = 16;
export const WINDOW_CHUNKS = 16;
