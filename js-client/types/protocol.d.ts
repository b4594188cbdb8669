// Protocol kiln.v1: the message types are generated from protocol/v1/schema.json
// (protocol.generated.d.ts, `make schema`); what the schema does not say is written here.

export * from "./protocol.generated.js";
import type { Message } from "./protocol.generated.js";

export type MessageType = Message["type"];

/** Every error code of python/kiln/protocol/codes.py. */
export type KnownErrorCode =
  | "bad_json" | "bad_message" | "unknown_type" | "message_too_large" | "bad_frame" | "unsupported_version"
  | "unauthorized" | "name_taken" | "out_of_order" | "duplicate_id" | "too_many" | "flow_control" | "bad_path"
  | "unknown_activity" | "unknown_stream" | "no_match" | "image_not_found" | "provider_lost" | "file_not_found"
  | "not_a_file" | "transfer_failed" | "container_failed" | "cancelled" | "timeout" | "connection_closed"
  | "internal";

export declare const ErrorCode: Readonly<Record<string, KnownErrorCode>>;
export declare const ERROR_CODES: ReadonlySet<string>;

export declare const PROTOCOL_NAME: "kiln.v1";
export declare const PROTOCOL_VERSION: string;
export declare const MAJOR_VERSION: number;
export declare const MAX_ID: number;
export declare const MAX_PATH_LENGTH: number;
export declare const MESSAGE_TYPES: ReadonlySet<MessageType>;
export declare const FINAL_REPLIES: ReadonlySet<MessageType>;

export declare class ProtocolViolation extends globalThis.Error {
  constructor(code: string, message: string, re?: number | null);
  code: string;
  re: number | null;
}

/** Parse and validate one text frame; throws ProtocolViolation (bad_json, unknown_type, bad_path, bad_message). */
export declare function parse(text: string): Message;
/** Validate a decoded JSON value as a message. */
export declare function validate(raw: unknown): Message;
/** The JSON text of a message, null fields omitted; throws ProtocolViolation if it is invalid. */
export declare function serialize(message: Message | Record<string, unknown>): string;
/** Why `path` is not a valid container path, or null. */
export declare function containerPathProblem(path: string): string | null;

export declare const FrameKind: Readonly<{ DATA: 0; END: 1; ABORT: 2 }>;
export declare const HEADER_SIZE: 8;
export declare const MAX_REASON_BYTES: 1024;
export interface Frame {
  kind: 0 | 1 | 2;
  stream: number;
  payload: Uint8Array;
}
export declare function encodeFrame(kind: number, stream: number, payload?: Uint8Array): Uint8Array;
/** Throws ProtocolViolation (bad_frame). */
export declare function decodeFrame(data: Uint8Array, maxPayload: number): Frame;
export declare function abortFrame(stream: number, reason: string): Uint8Array;

export declare const limits: {
  readonly CHUNK_BYTES: number;
  readonly MAX_MESSAGE_BYTES: number;
  readonly MAX_FRAME_BYTES: number;
  readonly WINDOW_CHUNKS: number;
  readonly MAX_WINDOW: number;
  readonly MAX_PENDING: number;
  readonly MAX_STREAMS: number;
  readonly MAX_OUTPUT_BYTES: number;
};
