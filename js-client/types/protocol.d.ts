// Protocol kiln.v1 messages, by hand, in step with protocol/v1/schema.json
// (test/types.test.js checks that every message type and field of the schema is here).

/** An amount of capacity: CPUs (fractions allowed), memory and storage in bytes. */
export interface Resources {
  cpus: number;
  memory: number;
  storage: number;
}

/** What a requestor asks for: at least these resources, and these labels exactly. */
export interface Demand {
  cpus: number;
  memory: number;
  storage: number;
  labels: Record<string, string>;
}

/** The hub's limits, announced in `welcome`; a peer must stay within them. */
export interface Limits {
  max_message_bytes: number;
  max_frame_bytes: number;
  chunk_bytes: number;
  max_window: number;
  max_pending: number;
  max_streams: number;
  max_output_bytes: number;
}

export interface ProviderInfo {
  name: string;
  arch: string;
  labels: Record<string, string>;
  images: string[];
  offered: Resources;
  free: Resources;
  activities: number;
}

export interface Hello {
  type: "hello";
  version: string;
  role: "requestor" | "provider";
  name: string;
  token?: string | null;
  software?: string;
}

export interface Welcome {
  type: "welcome";
  version: string;
  session: string;
  software: string;
  limits: Limits;
}

export interface Error {
  type: "error";
  re?: number | null;
  code: string;
  message: string;
}

export interface Done {
  type: "done";
  re: number;
  bytes?: number | null;
  cpu_seconds?: number | null;
}

export interface Offer {
  type: "offer";
  id: number;
  resources: Resources;
  arch: string;
  labels?: Record<string, string>;
  images?: string[];
}

export interface Rent {
  type: "rent";
  id: number;
  image: string;
  demand: Partial<Demand>;
  exclude?: string[];
}

export interface Rented {
  type: "rented";
  re: number;
  activity: string;
  provider: string;
  cached: boolean;
  resources: Resources;
}

export interface Release {
  type: "release";
  id: number;
  activity: string;
}

export interface MarketQuery {
  type: "market";
  id: number;
}

export interface MarketInfo {
  type: "market_info";
  re: number;
  providers: ProviderInfo[];
  activities: number;
}

export interface Create {
  type: "create";
  id: number;
  activity: string;
  image: string;
  resources: Resources;
}

export interface Destroy {
  type: "destroy";
  id: number;
  activity: string;
}

export interface ActivityLost {
  type: "activity_lost";
  activity: string;
  code: string;
  reason: string;
}

export interface Exec {
  type: "exec";
  id: number;
  activity: string;
  argv: string[];
  env?: Record<string, string>;
  workdir?: string | null;
  /** seconds */
  timeout?: number | null;
}

export interface ExecResult {
  type: "exec_result";
  re: number;
  exit_code: number;
  timed_out: boolean;
  /** base64 */
  stdout: string;
  /** base64 */
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  duration: number;
}

export interface Upload {
  type: "upload";
  id: number;
  activity: string;
  path: string;
  size: number;
  mode?: number;
}

export interface Download {
  type: "download";
  id: number;
  activity: string;
  path: string;
  window: number;
}

export interface DownloadInfo {
  type: "download_info";
  re: number;
  kind: "file" | "dir";
  size: number | null;
  mode: number;
}

export interface Credit {
  type: "credit";
  stream: number;
  chunks: number;
}

export interface Cancel {
  type: "cancel";
  target: number;
}

export type Message =
  | Hello | Welcome | Error | Done | Offer | Rent | Rented | Release | MarketQuery | MarketInfo
  | Create | Destroy | ActivityLost | Exec | ExecResult | Upload | Download | DownloadInfo | Credit | Cancel;

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
export declare const MINOR_VERSION: number;
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
