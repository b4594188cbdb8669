// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.
// Run `make schema` after changing the models in python/kiln/protocol/.

// The default limits of protocol kiln.v1 (the hub announces those in force in `welcome`,
// and those are the ones a client obeys), and the bounds no `welcome` changes.
export declare const CHUNK_BYTES: number;
export declare const DEFAULT_STORAGE: number;
export declare const HEADER_SIZE: number;
export declare const MAX_EXCLUDE: number;
export declare const MAX_FRAME_BYTES: number;
export declare const MAX_HELLO_BYTES: number;
export declare const MAX_ID: number;
export declare const MAX_LISTED: number;
export declare const MAX_MESSAGE_BYTES: number;
export declare const MAX_OUTPUT_BYTES: number;
export declare const MAX_PATH_LENGTH: number;
export declare const MAX_PENDING: number;
export declare const MAX_REASON_BYTES: number;
export declare const MAX_STREAM_ID: number;
export declare const MAX_STREAMS: number;
export declare const MAX_TASK_ATTEMPT: number;
export declare const MAX_TASK_REASON: number;
export declare const MAX_TEXT: number;
export declare const MAX_USAGE_ACTIVITIES: number;
export declare const MAX_WINDOW: number;
export declare const MIN_STORAGE: number;
export declare const OUTBOX_BYTES: number;
export declare const OUTPUT_WINDOW: number;
export declare const WINDOW_CHUNKS: number;
