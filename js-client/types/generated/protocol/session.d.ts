/**
 * One peer's side of a kiln.v1 session with the hub, as a state machine with no I/O (the
 * twin of `python/kiln/protocol/session.py`; the vectors in `protocol/v1/vectors/sessions/`
 * hold both to the same frames, events and errors).
 *
 * A requestor and a provider each hold one {@link Session}; their connections only pump
 * frames through it. The rules everything here follows:
 *
 * - A requestor takes `activity_lost` and (1.5) `cost` from the hub as one-way news (`notified`).
 * - The session opens with `hello`; the hub's first frame must be `welcome`. An `error`
 *   instead (or anything else) ends the session before it began.
 * - A request this side sends carries an id unique among its open requests. It stays open
 *   until exactly one final reply (`done`, `error`, `rented`, `market_info`,
 *   `exec_result`, `image_pushed`, `image_list`, `activity_list`, `balance_info`, `ledger_list`,
 *   `published`) names it in `re`, and
 *   the reply must fit the request's kind. Interim replies come before it: `download_info` once for a
 *   download before its data, `want` once for a `push_image` before its data (and from a
 *   provider once for a `create`), `rent_progress` any number of times for a `rent`.
 * - A notification (1.6: a requestor's `task`, a provider's `usage`) has no id and no reply; it
 *   is sent only to a hub that welcomed at 1.6 or later.
 * - Requests, and fields, of a later minor version than the hub's `welcome` (the image
 *   store's, 1.1; an exec's streams and root, 1.2; `activities`, 1.3; the market's prices, caps,
 *   budgets and strategies in a rent, `balance`, `ledger`, `verdict`, 1.5; `connect`, `publish`,
 *   `unpublish` and a demand's or an offer's `outbound`, 1.7) are refused here,
 *   before they are sent (UnsupportedVersionError).
 * - A request the hub sends a provider stays open until the provider sends exactly one
 *   final reply to it; replying to anything else is this side's misuse.
 * - An `upload`, `download` or `push_image` opens a stream under the request's id, closed
 *   with the request; a provider's `want` opens one under the `create`'s id, to receive on.
 *   An `exec` (1.2) opens one each way: its `stdin` toward the provider, its output
 *   (`stream`) toward the requestor. A `connect` (1.7) opens one each way too: toward the
 *   provider, waiting for its first credit (the sign that the port answered), and back, with
 *   `window` as its first credit. A request holds at most one stream in each direction,
 *   so frames and credit are told apart by their direction.
 *   The sender spends one credit per DATA frame and never more than it holds; the
 *   receiver grants credit and never lets what is outstanding exceed `max_window`. Data
 *   beyond the credit granted is the peer's violation and fails the stream.
 * - A frame for a stream or request that is no longer open is dropped: it crossed its end.
 * - When the connection ends, every open request of this side fails once with the reason
 *   (ConnectionClosedError when this side closed it, ConnectionLostError when it broke),
 *   the session is closed, and every further call that would send throws that reason.
 *
 * Use: make a Session (it queues `hello`), then for every frame from the hub call
 * {@link Session#receiveText} or {@link Session#receiveBinary}, and for every action
 * {@link Session#request}, {@link Session#reply}, {@link Session#sendData},
 * {@link Session#grant}, ... After each call, you must write what
 * {@link Session#dataToSend} returns and handle what {@link Session#eventsReceived}
 * returns, in order.
 * @module
 */
import { RemoteProtocolError } from "./errors.js";
export type KilnError = import("./errors.js").KilnError;
export type Message = import("../../protocol.js").Message;
export type Welcome = import("../../protocol.js").Welcome;
export type Limits = import("../../protocol.js").Limits;
export type Role = import("../../protocol.js").Role;
export type Request = import("../../protocol.js").Request;
export type HubRequest = import("../../protocol.js").HubRequest;
export type Reply = import("../../protocol.js").Reply;
export type Outbound = import("../../protocol.js").Outbound;
export type SessionEvent = import("../../protocol.js").SessionEvent;
export type Interim = import("../../protocol.js").Interim;
export type HubReply = Reply | Interim | import("../../protocol.js").Rented | import("../../protocol.js").MarketInfo | import("../../protocol.js").ImagePushed | import("../../protocol.js").ImageList | import("../../protocol.js").ActivityList | import("../../protocol.js").BalanceInfo | import("../../protocol.js").LedgerList | import("../../protocol.js").Published;
/** The states of a session. */
export declare const State: Readonly<{
    HELLO_SENT: "hello_sent";
    OPEN: "open";
    CLOSED: "closed";
}>;
export type Stream = {
    /**
     * sending: DATA frames we may still send; receiving: DATA frames the peer may still send
     */
    credit: number;
    ended: boolean;
    /**
     * data has moved
     */
    started: boolean;
};
export type Open = {
    kind: string;
    /**
     * the stream this side sends on
     */
    send: Stream | null;
    /**
     * the stream this side receives on
     */
    recv: Stream | null;
    informed: boolean;
};
/** A requestor's or a provider's side of one connection to the hub. */
export declare class Session {
    /** @type {Role} */
    role: Role;
    /** @type {import("../../protocol.js").SessionState} */
    state: import("../../protocol.js").SessionState;
    /** @type {Welcome | null} */
    welcome: Welcome | null;
    /** @type {KilnError | null} why the session ended, once it has */
    closed: KilnError | null;
    /**
     * Queues `hello` (an invalid name or token is a LocalProtocolError). A requestor may name
     * an earlier session to take over with `resume` (1.2): the `welcome.resume` it was given;
     * the hub's `welcome.resumed` then lists the activities it kept.
     * @param {Role} role
     * @param {string} name
     * @param {{token?: string | null, software?: string, resume?: string | null}} [options]
     */
    constructor(role: Role, name: string, options?: {
        token?: string | null;
        software?: string;
        resume?: string | null;
    });
    /** The limits the hub announced (only once welcomed). @returns {Limits} */
    get limits(): Limits;
    /** The protocol version both sides speak, from `welcome` (only once welcomed). @returns {string} */
    get version(): string;
    /** The minor protocol version both sides speak (only once welcomed). @returns {number} */
    get minor(): number;
    /** The frames to write, in order. Call after every other method. @returns {Outbound[]} */
    dataToSend(): Outbound[];
    /** What happened, in order. Call after every other method. @returns {SessionEvent[]} */
    eventsReceived(): SessionEvent[];
    /** A request id not in use by any open request of ours. */
    newId(): number;
    /**
     * Whether the hub's limits let a request of this type be sent now; if not, wait for one of
     * ours to end. True when the session is not open, so that {@link Session#request} says why.
     * @param {object & {type?: unknown}} message a request, built or not yet
     */
    hasRoom(message: object & {
        type?: unknown;
    }): boolean;
    /**
     * Send a request; it stays open until its final reply.
     *
     * An upload's, a push's, an exec's `stdin` or a connect's stream waits for the receiver's
     * credit (wait for a `credited` event); a download's, an exec's output (`stream`) or the
     * bytes a connect brings back have `window` as their first credit (an exec's or a
     * connect's default: {@link OUTPUT_WINDOW}, or `max_window` if less). Throws LocalProtocolError for an invalid message (checked
     * first), a request this role may not send, an id in use, too many open requests or
     * streams, or a window over `max_window`; UnsupportedVersionError for a request or
     * field of a later minor version than the hub welcomed us at; the session's end reason
     * once it is closed.
     * @param {Request | Record<string, unknown>} raw
     */
    request(raw: Request | Record<string, unknown>): void;
    /**
     * Send a notification: no id, and no reply comes (a requestor's `task` report, a provider's
     * `usage`; 1.6). Throws LocalProtocolError for an invalid message or one this role may not
     * send, UnsupportedVersionError when the hub welcomed us at an older version, and the
     * session's end reason once it is closed.
     * @param {import("../../protocol.js").TaskReport | import("../../protocol.js").Usage
     *   | Record<string, unknown>} raw
     */
    notify(raw: import("../../protocol.js").TaskReport | import("../../protocol.js").Usage | Record<string, unknown>): void;
    /**
     * Ask the hub to stop our open request `request`; it still ends with one reply. No-op if not open.
     * @param {number} request
     */
    cancel(request: number): void;
    /**
     * Answer the hub's open request `message.re`: once finally, and before that once with
     * `download_info` for a download, or with `want` for a `create` (which opens a stream
     * under the create's id to receive the blobs on: grant it credit). Throws
     * LocalProtocolError for an invalid message or one that answers no open request of the
     * hub's, or does not fit it.
     * @param {Reply | Record<string, unknown>} raw
     */
    reply(raw: Reply | Record<string, unknown>): void;
    /**
     * DATA frames we may send on `stream` now (0 for a stream we do not send on).
     * @param {number} stream
     */
    credit(stream: number): number;
    /**
     * Send one DATA frame of 1 to `chunk_bytes` bytes on `stream`, spending one credit.
     * @param {number} stream
     * @param {Uint8Array} data
     */
    sendData(stream: number, data: Uint8Array): void;
    /**
     * All of `stream`'s data is sent (an END frame).
     * @param {number} stream
     */
    endStream(stream: number): void;
    /**
     * Give up sending on `stream` (an ABORT frame, the reason cut to 1024 bytes); its
     * request then ends with an error. No-op if the stream is not open.
     * @param {number} stream
     * @param {string} reason
     */
    abortStream(stream: number, reason: string): void;
    /**
     * Let the sender of `stream` send `chunks` more DATA frames. No-op if the stream is
     * over; a LocalProtocolError if the credit outstanding would exceed `max_window`.
     * @param {number} stream
     * @param {number} chunks
     */
    grant(stream: number, chunks: number): void;
    /** This side ends the session (then close the socket): every open request fails with ConnectionClosedError. */
    close(): void;
    /**
     * The socket ended (after {@link Session#close}, or on its own: then ConnectionLostError).
     * @param {string} reason
     */
    connectionLost(reason: string): void;
    /**
     * Take one text frame from the hub.
     * @param {string} data
     */
    receiveText(data: string): void;
    /**
     * Take one binary (stream) frame from the hub.
     * @param {Uint8Array} data
     */
    receiveBinary(data: Uint8Array): void;
}
