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

import { ErrorCode } from "./generated/constants.js";
import { OUTPUT_WINDOW } from "./generated/limits.js";
import {
  ConnectionClosedError,
  ConnectionLostError,
  LocalProtocolError,
  RemoteProtocolError,
  TransferFailedError,
  UnsupportedVersionError,
  UsageError,
  errorFromCode,
} from "./errors.js";
import { FrameKind, abortFrame, decodeFrame, encodeFrame } from "./frames.js";
import { MAJOR_VERSION, MAX_ID, PROTOCOL_VERSION, build, clip, parse, serialize } from "./messages.js";

// The message, request and event types are declared once, for callers and for tsc alike,
// in types/protocol.d.ts.
/** @typedef {import("./errors.js").KilnError} KilnError */
/** @typedef {import("../../types/protocol.js").Message} Message */
/** @typedef {import("../../types/protocol.js").Welcome} Welcome */
/** @typedef {import("../../types/protocol.js").Limits} Limits */
/** @typedef {import("../../types/protocol.js").Role} Role */
/** @typedef {import("../../types/protocol.js").Request} Request */
/** @typedef {import("../../types/protocol.js").HubRequest} HubRequest */
/** @typedef {import("../../types/protocol.js").Reply} Reply */
/** @typedef {import("../../types/protocol.js").Outbound} Outbound */
/** @typedef {import("../../types/protocol.js").SessionEvent} SessionEvent */
/** @typedef {import("../../types/protocol.js").Interim} Interim */
/**
 * A reply from the hub to a request of ours: final, or interim.
 * @typedef {Reply | Interim | import("../../types/protocol.js").Rented | import("../../types/protocol.js").MarketInfo
 *   | import("../../types/protocol.js").ImagePushed | import("../../types/protocol.js").ImageList
 *   | import("../../types/protocol.js").ActivityList | import("../../types/protocol.js").BalanceInfo
 *   | import("../../types/protocol.js").LedgerList | import("../../types/protocol.js").Published} HubReply
 */

/** The requests each role may send. */
const SENDS = Object.freeze({
  requestor: Object.freeze(
    new Set([
      "rent", "release", "market", "activities", "exec", "upload", "download", "push_image", "list_images",
      "remove_image", "share_image", "balance", "ledger", "verdict", "connect", "publish", "unpublish",
    ]),
  ),
  provider: Object.freeze(new Set(["offer"])),
});

/**
 * The minor version that brought each request (absent: 0).
 * @type {Readonly<Record<string, number>>}
 */
const SINCE = Object.freeze({
  push_image: 1, list_images: 1, remove_image: 1, activities: 3, share_image: 4, balance: 5, ledger: 5, verdict: 5,
  connect: 7, publish: 7, unpublish: 7,
});

/**
 * The notifications each role may send (no id, no reply), with the minor version that brought each.
 * @type {Readonly<Record<string, Readonly<Record<string, number>>>>}
 */
const NOTIFIES = Object.freeze({ requestor: Object.freeze({ task: 6 }), provider: Object.freeze({ usage: 6 }) });

/** The fields of a rent that came with 1.5 (the market's): sent only to a hub that welcomed 1.5. */
const RENT_SINCE_5 = Object.freeze(["max_duration", "budget", "strategy", "allow", "min_reputation"]);

/**
 * For each kind of request, its interim reply, and whether that comes only once, before any data.
 * @type {Readonly<Record<string, {reply: string, once: boolean}>>}
 */
const INTERIM = Object.freeze({
  download: { reply: "download_info", once: true },
  push_image: { reply: "want", once: true },
  create: { reply: "want", once: true },
  rent: { reply: "rent_progress", once: false },
});

/**
 * The final replies that fit a request of each kind.
 * @type {Readonly<Record<string, ReadonlySet<string>>>}
 */
const ANSWERS = Object.freeze({
  rent: new Set(["rented", "error"]),
  release: new Set(["done", "error"]),
  market: new Set(["market_info", "error"]),
  activities: new Set(["activity_list", "error"]),
  exec: new Set(["exec_result", "error"]),
  upload: new Set(["done", "error"]),
  download: new Set(["done", "error"]),
  offer: new Set(["done", "error"]),
  push_image: new Set(["image_pushed", "error"]),
  list_images: new Set(["image_list", "error"]),
  remove_image: new Set(["done", "error"]),
  share_image: new Set(["done", "error"]),
  balance: new Set(["balance_info", "error"]),
  ledger: new Set(["ledger_list", "error"]),
  verdict: new Set(["done", "error"]),
  connect: new Set(["done", "error"]),
  publish: new Set(["published", "error"]),
  unpublish: new Set(["done", "error"]),
  create: new Set(["done", "error"]),
  destroy: new Set(["done", "error"]),
});

const HUB_REQUESTS = new Set(["create", "destroy", "exec", "connect", "upload", "download"]);
const REPLIES = new Set([
  "done", "error", "exec_result", "rented", "market_info", "image_pushed", "image_list", "activity_list",
  "download_info", "want", "rent_progress", "balance_info", "ledger_list", "published",
]);

/** The states of a session. */
export const State = Object.freeze({ HELLO_SENT: "hello_sent", OPEN: "open", CLOSED: "closed" });

// --- bookkeeping ------------------------------------------------------------------------

/**
 * One half of an open request's streams: the one this side sends on, or the one it receives on.
 * @typedef {object} Stream
 * @property {number} credit sending: DATA frames we may still send; receiving: DATA frames the peer may still send
 * @property {boolean} ended
 * @property {boolean} started data has moved
 */

/**
 * An open request: its kind, and its streams if it has any (at most one each way).
 * @typedef {object} Open
 * @property {string} kind
 * @property {Stream | null} send the stream this side sends on
 * @property {Stream | null} recv the stream this side receives on
 * @property {boolean} informed
 */

/**
 * A stream half, its first credit given.
 * @param {number} credit
 * @returns {Stream}
 */
const half = (credit) => ({ credit, ended: false, started: false });

/**
 * A request just opened, with no stream yet.
 * @param {string} kind
 * @returns {Open}
 */
const opened = (kind) => ({ kind, send: null, recv: null, informed: false });

/** A requestor's or a provider's side of one connection to the hub. */
export class Session {
  /**
   * Queues `hello` (an invalid name or token is a LocalProtocolError). A requestor may name
   * an earlier session to take over with `resume` (1.2): the `welcome.resume` it was given;
   * the hub's `welcome.resumed` then lists the activities it kept.
   * @param {Role} role
   * @param {string} name
   * @param {{token?: string | null, software?: string, resume?: string | null}} [options]
   */
  constructor(role, name, options = {}) {
    /** @type {Role} */
    this.role = role;
    /** @type {import("../../types/protocol.js").SessionState} */
    this.state = State.HELLO_SENT;
    /** @type {Welcome | null} */
    this.welcome = null;
    /** @type {KilnError | null} why the session ended, once it has */
    this.closed = null;
    /** @type {Map<number, Open>} requests we sent, by our id */
    this._mine = new Map();
    /** @type {Map<number, Open>} requests the hub sent us, by its id */
    this._theirs = new Map();
    this._nextId = 0;
    /** the highest request id this side has sent (ids wrap: then every id was) */
    this._highest = 0;
    /** @type {Outbound[]} */
    this._out = [];
    /** @type {SessionEvent[]} */
    this._events = [];
    if (options.resume != null && role !== "requestor") {
      throw new UsageError("only a requestor resumes a session");
    }
    const hello = { type: "hello", version: PROTOCOL_VERSION, role, name, token: options.token ?? null };
    this._send(build({ ...hello, software: options.software ?? "", resume: options.resume ?? null }));
  }

  /** The limits the hub announced (only once welcomed). @returns {Limits} */
  get limits() {
    if (this.welcome === null) {
      throw new LocalProtocolError("the session is not open yet: no limits", { code: ErrorCode.OUT_OF_ORDER });
    }
    return this.welcome.limits;
  }

  /** The protocol version both sides speak, from `welcome` (only once welcomed). @returns {string} */
  get version() {
    if (this.welcome === null) {
      throw new LocalProtocolError("the session is not open yet: no version", { code: ErrorCode.OUT_OF_ORDER });
    }
    return this.welcome.version;
  }

  /** The minor protocol version both sides speak (only once welcomed). @returns {number} */
  get minor() {
    return Number(this.version.split(".")[1]);
  }

  // --- output ---------------------------------------------------------------------------

  /** The frames to write, in order. Call after every other method. @returns {Outbound[]} */
  dataToSend() {
    const out = this._out;
    this._out = [];
    return out;
  }

  /** What happened, in order. Call after every other method. @returns {SessionEvent[]} */
  eventsReceived() {
    const events = this._events;
    this._events = [];
    return events;
  }

  // --- this side's requests -------------------------------------------------------------

  /** A request id not in use by any open request of ours. */
  newId() {
    do {
      this._nextId = this._nextId < MAX_ID ? this._nextId + 1 : 1;
    } while (this._mine.has(this._nextId));
    return this._nextId;
  }

  /**
   * Whether the hub's limits let a request of this type be sent now; if not, wait for one of
   * ours to end. True when the session is not open, so that {@link Session#request} says why.
   * @param {object & {type?: unknown}} message a request, built or not yet
   */
  hasRoom(message) {
    return this.state !== State.OPEN || this._full(message) === null;
  }

  /**
   * Which of the hub's limits `message` would pass, if any.
   * @param {object & {type?: unknown}} message a request, built or not yet
   * @returns {string | null}
   */
  _full(message) {
    const limits = this.limits;
    if (this._mine.size >= limits.max_pending) return `more than ${limits.max_pending} requests open at once`;
    const streams = [...this._mine.values()].filter((open) => open.send !== null || open.recv !== null).length;
    if (opensStream(message) && streams >= limits.max_streams) {
      return `more than ${limits.max_streams} streams open at once`;
    }
    return null;
  }

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
  request(raw) {
    const message = build(raw);
    this._checkOpen();
    if (!SENDS[this.role].has(message.type)) {
      throw new LocalProtocolError(`a ${this.role} may not send '${message.type}'`, { code: ErrorCode.OUT_OF_ORDER });
    }
    const request = /** @type {Request} */ (message);
    if (this._mine.has(request.id)) {
      throw new LocalProtocolError(`request id ${request.id} is already in use`, { code: ErrorCode.DUPLICATE_ID });
    }
    const { since, what } = sinceOf(request);
    if (since > this.minor) {
      throw new UnsupportedVersionError(`${what} needs protocol 1.${since}; the hub speaks ${this.version}`);
    }
    const limits = this.limits;
    const full = this._full(request);
    if (full !== null) throw new LocalProtocolError(full, { code: ErrorCode.TOO_MANY });
    const window = windowOf(request, limits);
    if (window !== null && window > limits.max_window) {
      throw new LocalProtocolError(`a window of ${window} exceeds the hub's ${limits.max_window}`, {
        code: ErrorCode.FLOW_CONTROL,
      });
    }
    const open = opened(request.type);
    // A sender waits for credit; a receiver's window is the credit it grants at once.
    if (sendsData(request)) open.send = half(0);
    if (window !== null) open.recv = half(window);
    this._mine.set(request.id, open);
    this._highest = Math.max(this._highest, request.id);
    this._send(request);
  }

  /**
   * Send a notification: no id, and no reply comes (a requestor's `task` report, a provider's
   * `usage`; 1.6). Throws LocalProtocolError for an invalid message or one this role may not
   * send, UnsupportedVersionError when the hub welcomed us at an older version, and the
   * session's end reason once it is closed.
   * @param {import("../../types/protocol.js").TaskReport | import("../../types/protocol.js").Usage
   *   | Record<string, unknown>} raw
   */
  notify(raw) {
    const message = build(raw);
    this._checkOpen();
    const since = NOTIFIES[this.role][message.type];
    if (since === undefined) {
      throw new LocalProtocolError(`a ${this.role} may not send '${message.type}'`, { code: ErrorCode.OUT_OF_ORDER });
    }
    if (since > this.minor) {
      throw new UnsupportedVersionError(`'${message.type}' needs protocol 1.${since}; the hub speaks ${this.version}`);
    }
    this._send(message);
  }

  /**
   * Ask the hub to stop our open request `request`; it still ends with one reply. No-op if not open.
   * @param {number} request
   */
  cancel(request) {
    if (this.state === State.OPEN && this._mine.has(request)) this._send(build({ type: "cancel", target: request }));
  }

  // --- a provider's replies ---------------------------------------------------------------

  /**
   * Answer the hub's open request `message.re`: once finally, and before that once with
   * `download_info` for a download, or with `want` for a `create` (which opens a stream
   * under the create's id to receive the blobs on: grant it credit). Throws
   * LocalProtocolError for an invalid message or one that answers no open request of the
   * hub's, or does not fit it.
   * @param {Reply | Record<string, unknown>} raw
   */
  reply(raw) {
    const message = build(raw);
    this._checkOpen();
    const re = "re" in message ? message.re : null;
    const open = re === null ? undefined : this._theirs.get(re);
    if (re === null || open === undefined) {
      throw new LocalProtocolError(`'${message.type}' answers no open request of the hub's`, {
        code: ErrorCode.OUT_OF_ORDER,
      });
    }
    if (message.type === "download_info" || message.type === "want") {
      if (!interimFits(open, message.type)) {
        throw new LocalProtocolError(`'${message.type}' does not fit the hub's '${open.kind}' now (request ${re})`, {
          code: ErrorCode.OUT_OF_ORDER,
        });
      }
      open.informed = true;
      // The blobs come on the create's stream.
      if (message.type === "want") open.recv = half(0);
    } else if (!ANSWERS[open.kind].has(message.type)) {
      throw new LocalProtocolError(`'${message.type}' does not answer a '${open.kind}'`, { code: ErrorCode.OUT_OF_ORDER });
    } else {
      this._theirs.delete(re);
    }
    this._send(message);
  }

  // --- streams ------------------------------------------------------------------------------

  /**
   * DATA frames we may send on `stream` now (0 for a stream we do not send on).
   * @param {number} stream
   */
  credit(stream) {
    const found = this._stream(stream, true);
    return found !== null && !found.ended ? found.credit : 0;
  }

  /**
   * Send one DATA frame of 1 to `chunk_bytes` bytes on `stream`, spending one credit.
   * @param {number} stream
   * @param {Uint8Array} data
   */
  sendData(stream, data) {
    this._checkOpen();
    const found = this._sending(stream);
    if (found.credit <= 0) {
      throw new LocalProtocolError(`no credit to send on stream ${stream}`, { code: ErrorCode.FLOW_CONTROL });
    }
    const chunkBytes = this.limits.chunk_bytes;
    if (!(data.byteLength > 0 && data.byteLength <= chunkBytes)) {
      throw new LocalProtocolError(`a DATA frame carries 1 to ${chunkBytes} bytes, not ${data.byteLength}`, {
        code: ErrorCode.BAD_FRAME,
      });
    }
    found.credit -= 1;
    found.started = true;
    this._out.push(Object.freeze({ binary: true, data: encodeFrame(FrameKind.DATA, stream, data) }));
  }

  /**
   * All of `stream`'s data is sent (an END frame).
   * @param {number} stream
   */
  endStream(stream) {
    this._checkOpen();
    this._sending(stream).ended = true;
    this._out.push(Object.freeze({ binary: true, data: encodeFrame(FrameKind.END, stream) }));
  }

  /**
   * Give up sending on `stream` (an ABORT frame, the reason cut to 1024 bytes); its
   * request then ends with an error. No-op if the stream is not open.
   * @param {number} stream
   * @param {string} reason
   */
  abortStream(stream, reason) {
    const found = this._stream(stream, true);
    if (this.state === State.OPEN && found !== null && !found.ended) {
      found.ended = true;
      this._out.push(Object.freeze({ binary: true, data: abortFrame(stream, reason) }));
    }
  }

  /**
   * Let the sender of `stream` send `chunks` more DATA frames. No-op if the stream is
   * over; a LocalProtocolError if the credit outstanding would exceed `max_window`.
   * @param {number} stream
   * @param {number} chunks
   */
  grant(stream, chunks) {
    const found = this._stream(stream, false);
    if (this.state !== State.OPEN || found === null || found.ended) return;
    const window = this.limits.max_window;
    if (chunks < 1 || found.credit + chunks > window) {
      throw new LocalProtocolError(`credit of ${chunks} on stream ${stream} would exceed the window of ${window}`, {
        code: ErrorCode.FLOW_CONTROL,
      });
    }
    found.credit += chunks;
    this._send(build({ type: "credit", stream, chunks }));
  }

  // --- the end ------------------------------------------------------------------------------

  /** This side ends the session (then close the socket): every open request fails with ConnectionClosedError. */
  close() {
    this._end(new ConnectionClosedError("the connection to the hub was closed by this side"));
  }

  /**
   * The socket ended (after {@link Session#close}, or on its own: then ConnectionLostError).
   * @param {string} reason
   */
  connectionLost(reason) {
    this._end(new ConnectionLostError(`the connection to the hub was lost: ${reason}`));
  }

  // --- input --------------------------------------------------------------------------------

  /**
   * Take one text frame from the hub.
   * @param {string} data
   */
  receiveText(data) {
    if (this.state === State.CLOSED) return;
    /** @type {Message} */
    let message;
    try {
      message = parse(data);
    } catch (e) {
      if (!(e instanceof RemoteProtocolError)) throw e;
      this._invalid(data, e);
      return;
    }
    if (this.state === State.HELLO_SENT) {
      this._handshake(message);
    } else if (message.type === "credit") {
      const found = this._stream(message.stream, true);
      if (found !== null && !found.ended) {
        found.credit += message.chunks;
        this._emit({ type: "credited", stream: message.stream, chunks: message.chunks });
      }
    } else if (isReply(message) && message.re !== null) {
      this._takeReply(message, message.re);
    } else if (message.type === "error" || (this.role === "requestor" && (message.type === "activity_lost" || message.type === "cost"))) {
      this._emit({ type: "notified", message });
    } else if (this.role === "provider" && HUB_REQUESTS.has(message.type)) {
      this._takeRequest(/** @type {HubRequest} */ (message));
    } else if (this.role === "provider" && message.type === "cancel") {
      if (this._theirs.has(message.target)) this._emit({ type: "cancelRequested", request: message.target });
    } else {
      this._violated(new RemoteProtocolError(`a ${this.role} does not expect '${message.type}'`, {
        code: ErrorCode.OUT_OF_ORDER,
      }));
    }
  }

  /**
   * Take one binary (stream) frame from the hub.
   * @param {Uint8Array} data
   */
  receiveBinary(data) {
    if (this.state === State.CLOSED) return;
    if (this.state === State.HELLO_SENT) {
      this._end(new RemoteProtocolError("a binary frame before welcome", { code: ErrorCode.OUT_OF_ORDER }));
      return;
    }
    let frame;
    try {
      frame = decodeFrame(data, this.limits.chunk_bytes);
    } catch (e) {
      if (!(e instanceof RemoteProtocolError)) throw e;
      this._violated(e);
      return;
    }
    const found = this._stream(frame.stream, false);
    if (found === null || found.ended) return; // it crossed the stream's end
    if (frame.kind === FrameKind.DATA) {
      if (found.credit <= 0) {
        found.ended = true;
        const error = new RemoteProtocolError(`data beyond the credit granted on stream ${frame.stream}`, {
          code: ErrorCode.FLOW_CONTROL,
          re: frame.stream,
        });
        this._emit({ type: "streamFailed", stream: frame.stream, error });
        return;
      }
      found.credit -= 1;
      found.started = true;
      this._emit({ type: "dataReceived", stream: frame.stream, data: frame.payload });
    } else if (frame.kind === FrameKind.END) {
      found.ended = true;
      this._emit({ type: "streamEnded", stream: frame.stream });
    } else {
      found.ended = true;
      const reason = new TextDecoder().decode(frame.payload);
      const error = new TransferFailedError(`the sender aborted the stream: ${reason}`);
      this._emit({ type: "streamFailed", stream: frame.stream, error });
    }
  }

  // --- internals ------------------------------------------------------------------------------

  /** @param {Message} message */
  _handshake(message) {
    if (message.type === "welcome") {
      if (Number(message.version.split(".")[0]) !== MAJOR_VERSION) {
        this._end(new UnsupportedVersionError(`the hub speaks protocol ${message.version}; we speak ${PROTOCOL_VERSION}`));
        return;
      }
      this.welcome = message;
      this.state = State.OPEN;
      this._emit({ type: "welcomed", welcome: message });
    } else if (message.type === "error") {
      this._end(errorFromCode(message.code, `the hub refused us: ${message.message}`));
    } else {
      this._end(new RemoteProtocolError(`expected welcome from the hub, got '${message.type}'`, {
        code: ErrorCode.OUT_OF_ORDER,
      }));
    }
  }

  /**
   * @param {HubReply} message
   * @param {number} re
   */
  _takeReply(message, re) {
    const open = this._mine.get(re);
    if (open === undefined && message.type === "error" && re <= this._highest) {
      // Not a violation: the hub's answer to a frame of ours that crossed the request's end
      // (stream data sent as the request failed is refused with unknown_stream). Dropped.
      return;
    }
    if (open === undefined) {
      // Replies to what we never asked are the hub's fault; to what we asked, out of order.
      this._violated(new RemoteProtocolError(`'${message.type}' answers no open request ${re}`, {
        code: ErrorCode.OUT_OF_ORDER,
      }));
      return;
    }
    if (message.type === "download_info" || message.type === "want" || message.type === "rent_progress") {
      if (!interimFits(open, message.type)) {
        this._mine.delete(re);
        const error = new RemoteProtocolError(`a misplaced ${message.type} for request ${re}`, {
          code: ErrorCode.OUT_OF_ORDER,
          re,
        });
        this._emit({ type: "failed", request: re, error });
        return;
      }
      open.informed = true;
      this._emit({ type: "informed", request: re, info: message });
      return;
    }
    this._mine.delete(re);
    if (message.type === "error") {
      this._emit({ type: "failed", request: re, error: errorFromCode(message.code, message.message, message.provider) });
    } else if (!ANSWERS[open.kind].has(message.type)) {
      const error = new RemoteProtocolError(`'${message.type}' does not answer a '${open.kind}'`, {
        code: ErrorCode.OUT_OF_ORDER,
        re,
      });
      this._emit({ type: "failed", request: re, error });
    } else {
      this._emit({ type: "replied", request: re, reply: message });
    }
  }

  /** @param {HubRequest} message */
  _takeRequest(message) {
    if (this._theirs.has(message.id)) {
      this._violated(new RemoteProtocolError(`the hub reused the id ${message.id} of an open request`, {
        code: ErrorCode.DUPLICATE_ID,
      }));
      return;
    }
    const open = opened(message.type);
    // The provider grants an upload's (an exec's stdin's, a connect's) first credit; the hub's window is ours to spend.
    if (message.type === "upload" || message.type === "connect" || (message.type === "exec" && message.stdin === true)) {
      open.recv = half(0);
    }
    const window = windowOf(message, this.limits);
    if (window !== null) open.send = half(window);
    this._theirs.set(message.id, open);
    this._emit({ type: "requested", message });
  }

  /**
   * Something unreadable came: it fails the request it names, or is answered, or is dropped.
   * @param {string} data
   * @param {RemoteProtocolError} error
   */
  _invalid(data, error) {
    if (this.state === State.HELLO_SENT) {
      this._end(new RemoteProtocolError(`the hub sent an invalid handshake reply: ${error.message}`, { code: error.code }));
      return;
    }
    const re = replyTo(data);
    if (re !== null && this._mine.has(re)) {
      this._mine.delete(re);
      const failure = new RemoteProtocolError(`the hub's reply is invalid: ${error.message}`, { code: error.code, re });
      this._emit({ type: "failed", request: re, error: failure });
    } else if (this.role === "provider" && error.re !== null && !this._theirs.has(error.re)) {
      // The hub waits for an answer to the request it meant to send: it gets one.
      this._send(build({ type: "error", re: error.re, code: error.code, message: clip(error.message) }));
    } else {
      this._violated(error);
    }
  }

  /** @param {RemoteProtocolError} error */
  _violated(error) {
    this._emit({ type: "violated", error });
  }

  /** @param {KilnError} error */
  _end(error) {
    if (this.state === State.CLOSED) return;
    this.state = State.CLOSED;
    this.closed = error;
    for (const re of this._mine.keys()) this._emit({ type: "failed", request: re, error });
    this._mine.clear();
    this._theirs.clear();
    this._emit({ type: "closed", error });
  }

  _checkOpen() {
    if (this.closed !== null) throw this.closed;
    if (this.state !== State.OPEN) {
      throw new LocalProtocolError("the session is not open yet (no welcome)", { code: ErrorCode.OUT_OF_ORDER });
    }
  }

  /**
   * The half of request `stream`'s streams that goes our way (`sending`) or the other.
   * @param {number} stream
   * @param {boolean} sending
   * @returns {Stream | null}
   */
  _stream(stream, sending) {
    const open = (this.role === "requestor" ? this._mine : this._theirs).get(stream);
    if (open === undefined) return null;
    return sending ? open.send : open.recv;
  }

  /**
   * @param {number} stream
   * @returns {Stream}
   */
  _sending(stream) {
    const found = this._stream(stream, true);
    if (found === null || found.ended) {
      throw new LocalProtocolError(`no open stream ${stream} to send on`, { code: ErrorCode.UNKNOWN_STREAM });
    }
    return found;
  }

  /** @param {Message} message a message built (checked) already */
  _send(message) {
    this._out.push(Object.freeze({ binary: false, data: serialize(message) }));
  }

  /** @param {SessionEvent} event */
  _emit(event) {
    this._events.push(Object.freeze(event));
  }
}

/**
 * Whether an interim reply of `kind` may come now for the request `open`.
 * @param {Open} open
 * @param {string} kind
 */
function interimFits(open, kind) {
  const fit = INTERIM[open.kind];
  if (fit === undefined || fit.reply !== kind) return false;
  const started = open.send?.started === true || open.recv?.started === true;
  return !fit.once || !(open.informed || started);
}

/**
 * The first credit of the stream `message` opens toward its sender, if it opens one.
 * @param {Request | HubRequest} message
 * @param {Limits} limits
 * @returns {number | null}
 */
function windowOf(message, limits) {
  if (message.type === "download") return message.window;
  if ((message.type === "exec" && message.stream === true) || message.type === "connect") {
    return message.window ?? Math.min(OUTPUT_WINDOW, limits.max_window);
  }
  return null;
}

/**
 * Whether this side's request `message` opens a stream to send on (it then waits for credit).
 * @param {Request} message
 */
const sendsData = (message) =>
  message.type === "upload" || message.type === "push_image" || message.type === "connect"
  || (message.type === "exec" && message.stdin === true);

/**
 * Whether `message` opens a stream (either way), so that it counts against `max_streams`.
 * @param {object & {type?: unknown, stdin?: unknown, stream?: unknown}} message a request, built or not yet
 */
function opensStream(message) {
  const kind = message.type;
  if (kind === "upload" || kind === "download" || kind === "push_image" || kind === "connect") return true;
  return kind === "exec" && (message.stdin === true || message.stream === true);
}

/**
 * The minor version `message` needs, and what needs it.
 * @param {Request} message
 * @returns {{since: number, what: string}}
 */
function sinceOf(message) {
  // The latest version first: a rent with outbound rules and a budget needs 1.7, not 1.5.
  const outbound = message.type === "rent" ? message.demand?.outbound : message.type === "offer" ? message.outbound : null;
  if (outbound != null && outbound.length > 0) return { since: 7, what: "outbound access" };
  if (message.type === "exec" && (message.stdin === true || message.stream === true)) {
    return { since: 2, what: "an exec's stdin or stream" };
  }
  if (message.type === "rent") {
    // The latest version first: a rent with user and a budget needs 1.5, not 1.2.
    const later = RENT_SINCE_5.find((field) => /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (message))[field] != null);
    if (later !== undefined) return { since: 5, what: `a rent's ${later}` };
    if (message.demand?.max_price != null) return { since: 5, what: "a demand's max_price" };
  }
  if (message.type === "rent" && message.user !== null && message.user !== undefined) {
    return { since: 2, what: `user='${message.user}'` };
  }
  if (message.type === "offer" && Array.isArray(message.cached) && message.cached.length > 0) {
    return { since: 4, what: "an offer's cached images" };
  }
  return { since: SINCE[message.type] ?? 0, what: `'${message.type}'` };
}

/**
 * @param {Message} message
 * @returns {message is HubReply}
 */
const isReply = (message) => REPLIES.has(message.type);

/**
 * The `re` of a text frame that failed validation, when it has a usable one.
 * @param {string} data
 * @returns {number | null}
 */
function replyTo(data) {
  let raw;
  try {
    raw = JSON.parse(data);
  } catch {
    return null;
  }
  const re = typeof raw === "object" && raw !== null && !Array.isArray(raw) ? raw.re : undefined;
  return Number.isInteger(re) ? re : null;
}
