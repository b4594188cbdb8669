// Protocol kiln.v1: the message types, the codes and the limits are generated from
// protocol/v1/schema.json (protocol.generated.d.ts, src/protocol/generated/, `make schema`);
// what the schema does not say is written here.

export * from "./protocol.generated.js";
import type { Message } from "./protocol.generated.js";
import type { KnownErrorCode } from "../src/protocol/generated/constants.js";
import * as generatedLimits from "../src/protocol/generated/limits.js";

export type MessageType = Message["type"];

export type { KnownErrorCode } from "../src/protocol/generated/constants.js";
export {
  ErrorCode,
  ERROR_CODES,
  CloseCode,
  PROTOCOL_NAME,
  PROTOCOL_VERSION,
  MAJOR_VERSION,
  MINOR_VERSION,
} from "../src/protocol/generated/constants.js";
/** MAX_EXCLUDE: the most providers one `rent` may pass over; MAX_TEXT: the longest free text a message carries. */
export { MAX_ID, MAX_EXCLUDE, MAX_PATH_LENGTH, MAX_TEXT, HEADER_SIZE, MAX_REASON_BYTES } from "../src/protocol/generated/limits.js";
export declare const MESSAGE_TYPES: ReadonlySet<MessageType>;
export declare const FINAL_REPLIES: ReadonlySet<MessageType>;
/** The types that answer a request before its final reply: `download_info`, `want`, `rent_progress`. */
export declare const INTERIM_REPLIES: ReadonlySet<MessageType>;

// --- the error tree (src/protocol/errors.js; drawn in src/errors.js) ---------------------

export interface KilnErrorOptions {
  /** The stable code; the class's `defaultCode` when left out. */
  code?: string;
  cause?: unknown;
  /** The provider involved, when the hub said which. */
  provider?: string | null;
}

/** The root of every Kiln error. `code` is stable; branch on it or on the class. */
export declare class KilnError extends globalThis.Error {
  constructor(message: string, options?: KilnErrorOptions);
  readonly code: KnownErrorCode | string;
  /** The provider involved, when the hub said which (e.g. the provider a failed rent was tried on). */
  readonly provider: string | null;
  static readonly defaultCode: string;
}
/** The caller's own mistake, found before anything is sent. */
export declare class UsageError extends KilnError {}
export declare class InvalidPathError extends UsageError {}
/** Protocol kiln.v1 was broken. */
export declare class ProtocolError extends KilnError {}
/** This side broke the protocol: a message it was about to send (never sent), or one the peer refused as invalid. */
export declare class LocalProtocolError extends ProtocolError {}
/** The peer broke the protocol. */
export declare class RemoteProtocolError extends ProtocolError {
  constructor(message: string, options?: KilnErrorOptions & { re?: number | null });
  /** The id of the request the bad message carried, if readable. */
  readonly re: number | null;
}
export declare class UnsupportedVersionError extends ProtocolError {}
/** The connection to the hub is over: this side closed it. */
export declare class ConnectionClosedError extends KilnError {}
/** The connection to the hub broke: the hub closed it or vanished, or the network failed. */
export declare class ConnectionLostError extends ConnectionClosedError {}
export declare class UnauthorizedError extends KilnError {}
export declare class NoMatchError extends KilnError {}
export declare class ImageNotFoundError extends KilnError {}
/** Not an image: a bad `docker save` archive, or one whose config and layers disagree (code bad_image). */
export declare class ImageError extends KilnError {}
/** A blob's bytes do not match its digest or size (code image_corrupt). */
export declare class ImageCorruptError extends ImageError {}
/** The hub's image store has no room for the image (code store_full). */
export declare class StoreFullError extends ImageError {}
/** (1.4) The image's layers would take more than a limit once extracted, or expand absurdly. */
export declare class ImageTooLargeError extends ImageError {}
export declare class ActivityError extends KilnError {}
export declare class ProviderLostError extends ActivityError {}
export declare class FileNotFoundError extends ActivityError {}
export declare class TransferFailedError extends ActivityError {}
export declare class ContainerFailedError extends ActivityError {}
export declare class CancelledError extends KilnError {}
export declare class RemoteError extends KilnError {}
/** The error for an `error` message with `code` (an unknown code: a RemoteError with code `internal`). */
export declare function errorFromCode(code: string, message: string, provider?: string | null): KilnError;

// --- messages ------------------------------------------------------------------------------

/** Parse and validate one text frame from the peer; throws RemoteProtocolError (bad_json, unknown_type, bad_path, bad_message). */
export declare function parse(text: string): Message;
/** A message this side means to send, checked (a frozen copy, defaults filled in); throws LocalProtocolError. */
export declare function build(raw: Message | Record<string, unknown>): Message;
/** The JSON text of a message, null fields omitted; throws LocalProtocolError if it is invalid. */
export declare function serialize(message: Message | Record<string, unknown>): string;
/** `text` cut to fit a message's free-text field (at most `limit` characters, valid UTF-8). */
export declare function clip(text: string, limit?: number): string;
/** Why `path` is not a valid container path, or null. */
export declare function containerPathProblem(path: string): string | null;

export declare const FrameKind: Readonly<{ DATA: 0; END: 1; ABORT: 2 }>;
export interface Frame {
  kind: 0 | 1 | 2;
  stream: number;
  payload: Uint8Array;
}
export declare function encodeFrame(kind: number, stream: number, payload?: Uint8Array): Uint8Array;
/** Throws RemoteProtocolError (bad_frame). */
export declare function decodeFrame(data: Uint8Array, maxPayload: number): Frame;
export declare function abortFrame(stream: number, reason: string): Uint8Array;

/** The default limits of the protocol and its fixed bounds (the hub announces the limits in force in `welcome`). */
export declare const limits: typeof generatedLimits;

// --- the session core (src/protocol/session.js) -------------------------------------------

import type {
  ActivitiesQuery,
  ActivityLost,
  Create,
  Destroy,
  Done,
  Download,
  DownloadInfo,
  Error as ErrorMessage,
  Exec,
  ExecResult,
  Limits,
  ListImages,
  MarketQuery,
  Offer,
  PushImage,
  Release,
  RemoveImage,
  Rent,
  RentProgress,
  Upload,
  Want,
  Welcome,
} from "./protocol.generated.js";

export type Role = "requestor" | "provider";
/** What this side may ask of the hub. */
export type Request =
  | Rent | Release | MarketQuery | ActivitiesQuery | Exec | Upload | Download | Offer | PushImage | ListImages
  | RemoveImage;
/** What the hub may ask of a provider. */
export type HubRequest = Create | Destroy | Exec | Upload | Download;
/** What a provider answers the hub with. */
export type Reply = Done | ErrorMessage | ExecResult | DownloadInfo | Want;
/** Replies that come before a request's final one. */
export type Interim = DownloadInfo | Want | RentProgress;
export type SessionState = "hello_sent" | "open" | "closed";

/** A frame to write: a message's JSON text (a text frame) or a binary stream frame. */
export type Outbound = { readonly binary: false; readonly data: string } | { readonly binary: true; readonly data: Uint8Array };

/** The hub took our hello; the session is open. */
export interface Welcomed { readonly type: "welcomed"; readonly welcome: Welcome }
/** Request `request` of ours succeeded; `reply` is its final reply. */
export interface Replied { readonly type: "replied"; readonly request: number; readonly reply: Message }
/** Request `request` of ours failed: an `error` reply, a bad reply, or the end of the connection. */
export interface Failed { readonly type: "failed"; readonly request: number; readonly error: KilnError }
/**
 * Our `request` is under way: an interim reply (what a download brings, the blobs a push
 * must send, how far a rent's image has loaded).
 */
export interface Informed { readonly type: "informed"; readonly request: number; readonly info: Interim }
/** The hub asks this provider for something; answer it with `session.reply()`, once. */
export interface Requested { readonly type: "requested"; readonly message: HubRequest }
/** The hub cancels its open request `request`; it still gets its one reply. */
export interface CancelRequested { readonly type: "cancelRequested"; readonly request: number }
/** One-way news from the hub: an activity is gone, or an error about no request of ours. */
export interface Notified { readonly type: "notified"; readonly message: ActivityLost | ErrorMessage }
/** The receiver of `stream` lets us send `chunks` more DATA frames. */
export interface Credited { readonly type: "credited"; readonly stream: number; readonly chunks: number }
/** A chunk of `stream` arrived (a view into the frame, not a copy). */
export interface DataReceived { readonly type: "dataReceived"; readonly stream: number; readonly data: Uint8Array }
/** All of `stream`'s data arrived; its request's final reply follows. */
export interface StreamEnded { readonly type: "streamEnded"; readonly stream: number }
/** `stream` broke off: its sender aborted it, or sent beyond its credit. */
export interface StreamFailed { readonly type: "streamFailed"; readonly stream: number; readonly error: KilnError }
/** The hub sent something invalid that concerns no open request of ours; it was dropped. */
export interface Violated { readonly type: "violated"; readonly error: RemoteProtocolError }
/** The session is over, and why. Always the last event. */
export interface Closed { readonly type: "closed"; readonly error: KilnError }
export type SessionEvent =
  | Welcomed | Replied | Failed | Informed | Requested | CancelRequested | Notified
  | Credited | DataReceived | StreamEnded | StreamFailed | Violated | Closed;

export declare const State: Readonly<{ HELLO_SENT: "hello_sent"; OPEN: "open"; CLOSED: "closed" }>;

/**
 * One peer's side of a kiln.v1 session with the hub, with no I/O: frames and calls in,
 * frames to send and events out. After every call, write what `dataToSend()` returns and
 * handle what `eventsReceived()` returns, in order.
 */
export declare class Session {
  /** Queues `hello`; throws LocalProtocolError for an invalid name or token. */
  constructor(role: Role, name: string, options?: { token?: string | null; software?: string });
  readonly role: Role;
  readonly state: SessionState;
  readonly welcome: Welcome | null;
  /** Why the session ended, once it has. */
  readonly closed: KilnError | null;
  /** The limits the hub announced; throws LocalProtocolError before `welcome`. */
  readonly limits: Limits;
  /** The protocol version both sides speak, from `welcome`; throws LocalProtocolError before it. */
  readonly version: string;
  /** The minor protocol version both sides speak; throws LocalProtocolError before `welcome`. */
  readonly minor: number;
  dataToSend(): Outbound[];
  eventsReceived(): SessionEvent[];
  /** A request id not in use by any open request of ours. */
  newId(): number;
  /** Send a request (checked first; throws LocalProtocolError, or the end reason once closed). */
  request(message: Request | Record<string, unknown>): void;
  /** Ask the hub to stop an open request of ours; no-op if it is not open. */
  cancel(request: number): void;
  /** A provider answers the hub's open request `message.re`. */
  reply(message: Reply | Record<string, unknown>): void;
  /** DATA frames we may send on `stream` now. */
  credit(stream: number): number;
  sendData(stream: number, data: Uint8Array): void;
  endStream(stream: number): void;
  /** Give up sending on `stream`; no-op if it is not open. */
  abortStream(stream: number, reason: string): void;
  /** Let the sender of `stream` send `chunks` more DATA frames; no-op once the stream is over. */
  grant(stream: number, chunks: number): void;
  /** This side ends the session: what is open fails with ConnectionClosedError. */
  close(): void;
  /** The socket ended: what is open fails with ConnectionLostError (unless closed already). */
  connectionLost(reason: string): void;
  receiveText(data: string): void;
  receiveBinary(data: Uint8Array): void;
}
