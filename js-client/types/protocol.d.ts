// Protocol kiln.v1. The values kiln-client/protocol exports (codes, limits, the error tree,
// parse/build, frames, the Session) are declared from the sources' JSDoc
// (types/generated/protocol/, `make schema`); the message types are generated from
// protocol/v1/schema.json (protocol.generated.d.ts). What neither says is written here: the
// unions of messages the session speaks of, and its events.

export * from "./protocol.generated.js";
export * from "./generated/protocol/index.js";
import type { Message } from "./protocol.generated.js";
import type { KilnError, RemoteProtocolError } from "./generated/protocol/errors.js";

export type MessageType = Message["type"];
export type { KnownErrorCode } from "../src/protocol/generated/constants.js";
export type { KilnErrorOptions } from "./generated/protocol/errors.js";

// --- the session core (src/protocol/session.js) -------------------------------------------

import type {
  ActivitiesQuery,
  ActivityLost,
  BalanceQuery,
  Connect,
  Cost,
  Create,
  Destroy,
  Done,
  Download,
  DownloadInfo,
  Error as ErrorMessage,
  Exec,
  ExecResult,
  LedgerQuery,
  Limits,
  ListImages,
  MarketQuery,
  Offer,
  Publish,
  PushImage,
  Release,
  RemoveImage,
  Rent,
  RentProgress,
  Unpublish,
  Upload,
  VerdictReport,
  Want,
  Welcome,
} from "./protocol.generated.js";

export type Role = "requestor" | "provider";
/** What this side may ask of the hub. */
export type Request =
  | Rent | Release | MarketQuery | ActivitiesQuery | Exec | Upload | Download | Offer | PushImage | ListImages
  | RemoveImage | BalanceQuery | LedgerQuery | VerdictReport | Connect | Publish | Unpublish;
/** What the hub may ask of a provider. */
export type HubRequest = Create | Destroy | Exec | Connect | Upload | Download;
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
/** One-way news from the hub: an activity is gone, what a priced one owes so far (1.5), or an error about no request of ours. */
export interface Notified { readonly type: "notified"; readonly message: ActivityLost | Cost | ErrorMessage }
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
