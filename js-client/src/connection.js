/**
 * The requestor's connection to the hub: a WebSocket pumping a protocol {@link Session}
 * (mirrors `python/kiln/connection.py`).
 *
 * The session (`src/protocol/session.js`) decides everything: ids, which reply ends which
 * request, credit, what a lost connection means. This module only moves frames. Every
 * frame from the socket goes into the session, and the events that come out become
 * wake-ups: a request's promise, a stream's buffer or credit. Events it has no use for (an
 * activity lost, a violation, the end) go to `onEvent`. Every call writes what the
 * session wants sent, in order. Its handlers never wait.
 *
 * Use: `const conn = await Connection.open(openSocket, url, {name, token})`, then
 * {@link Connection#request}, or {@link Connection#openUpload} /
 * {@link Connection#openDownload} / {@link Connection#openExec} / {@link Connection#openConnect}
 * for streams (a `push_image` sends like an upload; an exec and a connect may have one stream
 * each way). {@link Connection#close} ends it.
 * @module
 */

import { Deferred, settlesWithin, sleep } from "./deferred.js";
import {
  CancelledError,
  ConnectionClosedError,
  ConnectionLostError,
  RemoteProtocolError,
  UnsupportedVersionError,
  UsageError,
} from "./errors.js";
import { CloseCode, ErrorCode } from "./protocol/generated/constants.js";
import { PROTOCOL_NAME, build } from "./protocol/messages.js";
import { Session } from "./protocol/session.js";

/** @typedef {import("./errors.js").KilnError} KilnError */
/** @typedef {import("../types/protocol.js").Message} Message */
/** @typedef {import("../types/protocol.js").DownloadInfo} DownloadInfo */
/** @typedef {import("../types/protocol.js").Interim} Interim */
/** @typedef {(info: Interim) => void} OnInterim what a request's interim replies go to (keep it quick: it never waits) */
/** @typedef {import("../types/protocol.js").SessionEvent} SessionEvent */
/** @typedef {Record<string, unknown> & {id: number}} RequestMessage a request to send, checked by the session */
/** @typedef {{message: RequestMessage, reply: Deferred<Message>}} Waiting */

const SOFTWARE = "kiln-js/0.1.0";
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Bytes the socket may hold unsent before a stream sender waits for it to drain. */
const HIGH_WATER_BYTES = 8 * 1024 * 1024;
/** How long `close()` waits for the socket to close. */
const CLOSE_WAIT_MS = 5_000;
/** Bytes waiting in the socket's buffer past which a notification is dropped rather than queued. */
const NOTIFY_BACKLOG_BYTES = 1024 * 1024;
/** WebSocket.OPEN, the same in browsers and `ws`. */
const OPEN = 1;

const HUB_URL_FORM = "a hub URL looks like ws://host:7465 or wss://host:7465";

/**
 * `url` when it is a hub's address: ws:// or wss://, a host, and a port from 1 to 65535 if
 * it names one ("ws://hub.example:7465", "wss://10.0.0.2:7465/"). Otherwise throws a
 * {@link UsageError} saying what is wrong (no scheme, http://, no host, a bad port) and what
 * a hub URL looks like. Python's `kiln.connection.check_hub_url` judges alike.
 * @param {unknown} url
 * @returns {string}
 */
export function checkHubUrl(url) {
  const text = url instanceof URL ? url.href : url;
  /** @param {string} why */
  const bad = (why) => new UsageError(`${JSON.stringify(text)} is not a hub URL (${why}): ${HUB_URL_FORM}`);
  if (typeof text !== "string" || text.trim() === "") throw new UsageError(`no hub URL given: ${HUB_URL_FORM}`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text);
  if (scheme === null) throw bad("no ws:// or wss:// in front");
  const name = scheme[1].toLowerCase();
  if (name === "http" || name === "https") throw bad(`a hub speaks WebSocket, not ${name.toUpperCase()}`);
  if (name !== "ws" && name !== "wss") throw bad(`its scheme is ${name}://, not ws:// or wss://`);
  const authority = text.slice(scheme[0].length).split(/[/?#]/, 1)[0];
  const hostPort = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/s.exec(authority.slice(authority.lastIndexOf("@") + 1));
  const host = hostPort?.[1] ?? "";
  const port = hostPort?.[2];
  if (/\s/.test(text)) throw bad("it holds white space");
  if (host === "" || host === "[]") throw bad("it names no host");
  if (host.startsWith("[") !== host.endsWith("]")) throw bad("an IPv6 address goes between [ and ]");
  if (port !== undefined && !(/^[0-9]{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535)) {
    throw bad("its port must be a number from 1 to 65535");
  }
  try {
    new URL(text);
  } catch {
    throw bad("it does not parse as a URL");
  }
  return text;
}

/** The most hub URLs one client takes (the hubs of one market it may move between). */
export const MAX_HUB_URLS = 16;

/**
 * The hub URLs `urls` names, in order, each once: one URL, several separated by commas
 * ("ws://a:7465,ws://b:7465"), or an array of those. Throws a {@link UsageError} naming the
 * first that is not a hub's ({@link checkHubUrl}), for none at all, or for more than
 * {@link MAX_HUB_URLS}. Python's `kiln.connection.hub_urls` reads alike.
 * @param {unknown} urls
 * @returns {string[]}
 */
export function hubUrls(urls) {
  const given = Array.isArray(urls) ? urls : [urls];
  /** @type {string[]} */
  const found = [];
  for (const item of given) {
    const text = item instanceof URL ? item.href : item;
    if (typeof text !== "string" || text.trim() === "") checkHubUrl(text); // throws: no URL given
    for (const part of /** @type {string} */ (text).split(",")) {
      if (part.trim() === "") {
        throw new UsageError(`${JSON.stringify(text)} holds an empty hub URL between its commas: ${HUB_URL_FORM}`);
      }
      const url = checkHubUrl(part.trim());
      if (!found.includes(url)) found.push(url);
    }
  }
  if (found.length === 0) throw new UsageError(`no hub URL given: ${HUB_URL_FORM}`);
  if (found.length > MAX_HUB_URLS) {
    throw new UsageError(`${found.length} hub URLs given; a client takes at most ${MAX_HUB_URLS}`);
  }
  return found;
}

/**
 * The hubs a client may dial ({@link hubUrls}) and the one it is on. A client dials them in
 * {@link HubRing#order}: the one it is on (at first, the first given), then each other in
 * turn, round robin; the one that answers becomes the one it is on ({@link HubRing#moved}).
 * Its backoff counts full rounds, not single dials. Mirrors Python's `kiln.connection.HubRing`.
 */
export class HubRing {
  /** @param {unknown} urls */
  constructor(urls) {
    /** @type {readonly string[]} */
    this.urls = Object.freeze(hubUrls(urls));
    this._at = 0;
  }

  /** The hub the client is on (or was on last). */
  get current() {
    return this.urls[this._at];
  }

  /** One round of dials: the current hub, then the others in turn. @returns {string[]} */
  order() {
    return [...this.urls.slice(this._at), ...this.urls.slice(0, this._at)];
  }

  /** The client is on `url` now (one of {@link HubRing#urls}). @param {string} url */
  moved(url) {
    const at = this.urls.indexOf(url);
    if (at === -1) throw new UsageError(`${url} is not one of this client's hubs`);
    this._at = at;
  }
}

/**
 * The WebSocket surface kiln-client needs: the browser's, which `ws` and undici share.
 * @typedef {object} Socket
 * @property {string} protocol
 * @property {number} readyState
 * @property {number} bufferedAmount
 * @property {string} binaryType
 * @property {(data: string | Uint8Array) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {(type: string, listener: (event: any) => void) => void} addEventListener
 */

/** Node's codes for a hub certificate whose chain leads to no CA this side trusts. */
const UNTRUSTED_CERTIFICATE = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
]);

/**
 * Why dialling the hub at `url` failed, said plainly when there is more to say than the
 * error's own message (else null): a certificate this side does not trust above all, and a
 * hint when ws:// and wss:// seem mixed up. Node (`ws`) gives the error's code; a browser
 * tells nothing.
 * @param {string} url
 * @param {any} error
 * @returns {string | null}
 */
export function dialError(url, error) {
  const code = typeof error === "object" && error !== null ? error.code : undefined;
  const text = describe(error);
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return `the hub at ${url} presented a certificate for another address (${text}): dial it by a name or IP address its certificate lists`;
  }
  if (UNTRUSTED_CERTIFICATE.has(code)) {
    return `the hub at ${url} presented a certificate that is not trusted (${text}): pass the CA that signed it as the ca option`;
  }
  if (code !== "ECONNRESET") return null;
  const hint = /^wss:/i.test(url)
    ? "does the hub serve TLS? a hub without --tls-cert has a ws:// address"
    : "a hub that serves TLS has a wss:// address";
  return `cannot reach the hub at ${url}: ${text} (${hint})`;
}

/** @typedef {(url: string, protocols: string[]) => Socket} OpenSocket */

/**
 * The receiving end of a stream: iterate it for chunks; credit goes back as you consume
 * them. What it buffers is bounded by the credit granted: the session fails a stream
 * whose sender overruns it.
 */
export class Incoming {
  /**
   * @param {Connection} conn
   * @param {number} stream
   * @param {number} window the credit granted when the stream was opened
   */
  constructor(conn, stream, window) {
    this._conn = conn;
    this.stream = stream;
    this.window = window;
    /** @type {Deferred<DownloadInfo>} */
    this.info = new Deferred();
    /** @type {Uint8Array[]} */
    this._chunks = [];
    this._ended = false;
    /** @type {KilnError | null} */
    this._error = null;
    this._consumed = 0;
    /** @type {Deferred<void> | null} */
    this._wake = null;
  }

  /** @param {Uint8Array} data */
  _feed(data) {
    this._chunks.push(data);
    this._wake?.resolve();
  }

  _end() {
    this._ended = true;
    this._wake?.resolve();
  }

  /** Whether all the stream's data came (END). */
  get ended() {
    return this._ended;
  }

  /**
   * End the stream with `error` (what a reader waiting on it then throws).
   * @param {KilnError} error
   */
  fail(error) {
    if (this._error === null && !this._ended) this._error = error;
    if (!this.info.settled) this.info.reject(error);
    this._wake?.resolve();
  }

  /** @returns {AsyncGenerator<Uint8Array, void, void>} */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this._chunks.length === 0) {
        if (this._error !== null) throw this._error;
        if (this._ended) return;
        this._wake = new Deferred();
        await this._wake.promise;
        this._wake = null;
      }
      const chunk = /** @type {Uint8Array} */ (this._chunks.shift());
      this._consumed += 1;
      // Credit goes back in batches of half a window: few messages, never a stall.
      if (this._consumed * 2 >= this.window && !this._ended) {
        const grant = this._consumed;
        this._consumed = 0;
        this._conn.grant(this.stream, grant);
      }
      yield chunk;
    }
  }
}

/**
 * The sending end of a stream: {@link Outgoing#write} waits for credit, {@link Outgoing#end}
 * finishes it. The stream is over when its request ends: with an error, a writer throws it;
 * with a reply (an exec whose command ended before reading all its input), it is
 * {@link Outgoing#closed} and a writer stops quietly.
 */
export class Outgoing {
  /** @param {Connection} conn @param {number} stream */
  constructor(conn, stream) {
    this._conn = conn;
    this.stream = stream;
    /** @type {KilnError | null} */
    this._error = null;
    this._closed = false;
    /** @type {Deferred<void> | null} */
    this._wake = null;
    /**
     * Settles with the receiver's first credit (for a connect, the sign that the port
     * answered), or fails with the stream; a request that ended first settles it too.
     * @type {Deferred<void>}
     */
    this.ready = new Deferred();
  }

  _credited() {
    this.ready.resolve();
    this._wake?.resolve();
  }

  /** The request ended with its reply: nothing more is sent, and a writer waiting stops. */
  _close() {
    this._closed = true;
    this.ready.resolve();
    this._wake?.resolve();
  }

  /** Whether the request ended with its reply while the stream was open: what is left is not sent. */
  get closed() {
    return this._closed;
  }

  /** Why the stream failed, once it has. */
  get error() {
    return this._error;
  }

  /**
   * Stop the stream: a writer waiting for credit throws `error`.
   * @param {KilnError} error
   */
  fail(error) {
    if (this._error === null) this._error = error;
    if (!this.ready.settled) this.ready.reject(error);
    this._wake?.resolve();
  }

  /**
   * Send `data` in DATA frames of at most `chunk_bytes`, each within the credit granted,
   * waiting while the socket holds too much unsent data. Throws the stream's error once
   * it failed; returns at once (sending nothing more) once it is {@link Outgoing#closed}.
   * @param {Uint8Array} data
   */
  async write(data) {
    const { session, socket } = this._conn;
    const size = session.limits.chunk_bytes;
    for (let start = 0; start < data.byteLength; start += size) {
      while (this._error === null && !this._closed && session.credit(this.stream) <= 0) {
        this._wake = new Deferred();
        await this._wake.promise;
        this._wake = null;
      }
      // The socket has no drain event in browsers: poll until it is below the mark.
      while (this._error === null && !this._closed && socket.bufferedAmount > HIGH_WATER_BYTES) await sleep(5);
      if (this._error !== null) throw this._error;
      if (this._closed) return;
      session.sendData(this.stream, data.subarray(start, start + size));
      this._conn.flush();
    }
  }

  /** All the data is sent (an END frame); no-op once the stream is {@link Outgoing#closed}. */
  end() {
    if (this._error !== null) throw this._error;
    if (this._closed) return;
    this._conn.session.endStream(this.stream);
    this._conn.flush();
  }

  /** Give up the stream (no-op once it is over or the connection is gone). @param {string} reason */
  abort(reason) {
    this._conn.session.abortStream(this.stream, reason);
    this._conn.flush();
  }
}

/** A live, welcomed connection to the hub. Get one from {@link Connection.open}. */
export class Connection {
  /**
   * Dial the hub at `url` and exchange hello/welcome; the socket is closed if that fails.
   *
   * Throws {@link ConnectionLostError} when the hub cannot be reached or does not answer,
   * {@link UnsupportedVersionError} when it speaks another protocol or major version,
   * the error the hub refused us with (e.g. an UnauthorizedError), a
   * LocalProtocolError for a name or token the protocol does not allow, or a
   * {@link UsageError} for a URL that is not a hub's ({@link checkHubUrl}), before anything is dialled.
   * @param {OpenSocket} openSocket
   * @param {string} url
   *
   * `resume` (1.2): the `welcome.resume` of an earlier connection, whose activities this
   * one takes over (its `welcome.resumed` lists them). `signal` gives the dial up: it
   * rejects with a ConnectionClosedError, its socket closed and its timer cleared.
   * @param {{name: string, token?: string | null, timeoutMs?: number, resume?: string | null, signal?: AbortSignal}} options
   * @returns {Promise<Connection>}
   */
  static async open(openSocket, url, options) {
    checkHubUrl(url);
    const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const session = new Session("requestor", options.name, {
      token: options.token ?? null,
      software: SOFTWARE,
      resume: options.resume ?? null,
    });
    /** @type {Socket} */
    let socket;
    try {
      socket = openSocket(url, [PROTOCOL_NAME]);
    } catch (e) {
      throw new ConnectionLostError(`cannot reach the hub at ${url}: ${describe(e)}`, { cause: e });
    }
    const conn = new Connection(socket, session, url);
    const timer = setTimeout(() => {
      conn._welcomed.reject(new ConnectionLostError(`the hub at ${url} did not answer hello within ${timeoutMs} ms`));
    }, timeoutMs);
    const giveUp = () => conn._welcomed.reject(new ConnectionClosedError(`the dial of the hub at ${url} was given up`));
    options.signal?.addEventListener("abort", giveUp, { once: true });
    if (options.signal?.aborted) giveUp();
    try {
      await conn._welcomed.promise;
      return conn;
    } catch (e) {
      session.close();
      conn._dispatch();
      socket.close(CloseCode.NORMAL);
      throw e;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", giveUp);
    }
  }

  /**
   * @param {Socket} socket
   * @param {Session} session
   * @param {string} [url] the hub's address, for the errors of a failed dial
   */
  constructor(socket, session, url = "") {
    this.socket = socket;
    this.session = session;
    /** @type {(event: SessionEvent) => void} what gets the events the connection has no use for */
    this.onEvent = () => {};
    /** @type {Map<number, Deferred<Message>>} */
    this._replies = new Map();
    /** @type {Map<number, Incoming>} */
    this._incoming = new Map();
    /** @type {Map<number, Outgoing>} */
    this._outgoing = new Map();
    /** @type {Map<number, OnInterim>} where the interim replies of a request go (other than a download's info) */
    this._interim = new Map();
    /** @type {Waiting[]} requests in line for room under the hub's limits, oldest first */
    this._waiting = [];
    /** @type {Deferred<void>} settles with the handshake */
    this._welcomed = new Deferred();
    /** @type {Deferred<void>} settles when the socket has closed */
    this.finished = new Deferred();
    /** @type {string | null} what the socket's last error said, for the loss's reason */
    this._socketError = null;
    this._opened = false;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      this._opened = true;
      // A hub that selects no subprotocol may still speak kiln.v1: its welcome decides.
      if (socket.protocol !== "" && socket.protocol !== PROTOCOL_NAME) {
        this._welcomed.reject(new UnsupportedVersionError(`the hub speaks ${socket.protocol}, not ${PROTOCOL_NAME}`));
        return;
      }
      this.flush();
    });
    socket.addEventListener("message", (event) => {
      this._take(event.data);
      this._dispatch();
      this.flush();
    });
    socket.addEventListener("error", (event) => {
      const error = event.error ?? event.message ?? event;
      const text = describe(error);
      this._socketError = text;
      // `ws` refuses a subprotocol it did not offer before the socket opens.
      if (/subprotocol/i.test(text)) {
        this._welcomed.reject(new UnsupportedVersionError(`the hub does not speak ${PROTOCOL_NAME}: ${text}`));
        return;
      }
      const failed = this._opened ? null : dialError(url, error);
      if (failed !== null) this._welcomed.reject(new ConnectionLostError(failed, { cause: error }));
    });
    socket.addEventListener("close", (event) => {
      const detail = event.code === CloseCode.ABNORMAL ? "without a close frame" : `with code ${event.code}`;
      const reason = this._socketError ?? `the hub closed it ${detail}${event.reason ? ` (${event.reason})` : ""}`;
      this.session.connectionLost(reason);
      this._dispatch();
      this.finished.resolve();
    });
  }

  newId() {
    return this.session.newId();
  }

  /** This connection (what an activity asks of its requestor's link to the hub). @returns {Promise<Connection>} */
  async _connected() {
    return this;
  }

  // --- sending ------------------------------------------------------------------------------

  /** Write everything the session has queued, in order. */
  flush() {
    for (const frame of this.session.dataToSend()) {
      // Closing or closed: the close event reports the loss to the session.
      if (this.socket.readyState !== OPEN) return;
      this.socket.send(frame.data);
    }
  }

  /**
   * Send a notification (see `Session#notify`): no reply comes. False, and nothing sent,
   * while more than {@link NOTIFY_BACKLOG_BYTES} wait in the socket's buffer: what
   * notifications say is worth less than slowing what waits. Throws as `Session#notify` does.
   * @param {import("../types/protocol.js").TaskReport | import("../types/protocol.js").Usage} message
   * @returns {boolean}
   */
  notify(message) {
    if (this.socket.bufferedAmount > NOTIFY_BACKLOG_BYTES) return false;
    this.session.notify(message);
    this.flush();
    return true;
  }

  /**
   * Send a request; the deferred settles with its final reply, or fails with a KilnError.
   * Throws at once (nothing sent) if the session refuses it. With as many requests (or
   * streams) open as the hub allows, it waits in line and is sent when one of ours ends:
   * a caller may start any number at once. `onInterim` gets its interim replies
   * (`want`, `rent_progress`), if any come.
   * @param {RequestMessage} message
   * @param {OnInterim} [onInterim]
   * @returns {Deferred<Message>}
   */
  start(message, onInterim) {
    /** @type {Deferred<Message>} */
    const reply = new Deferred();
    if (onInterim !== undefined) this._interim.set(message.id, onInterim);
    if (this._waiting.length > 0 || !this.session.hasRoom(message)) {
      build(message); // refused now, not once its turn comes
      this._waiting.push({ message, reply });
      return reply;
    }
    this._send(message, reply);
    return reply;
  }

  /** @param {RequestMessage} message @param {Deferred<Message>} reply */
  _send(message, reply) {
    this.session.request(message);
    this._replies.set(message.id, reply);
    this.flush();
  }

  /** Send what waits in line while the hub's limits allow. */
  _sendWaiting() {
    while (this._waiting.length > 0 && this.session.hasRoom(this._waiting[0].message)) {
      const { message, reply } = /** @type {Waiting} */ (this._waiting.shift());
      try {
        this._send(message, reply);
      } catch (e) {
        // Refused at its turn (the session is over: the reason it ended): its streams fail with it.
        this._replies.set(message.id, reply);
        this._settle(message.id, null, /** @type {KilnError} */ (e));
      }
    }
  }

  /**
   * Send a request and wait for its final reply; an `error` reply is thrown as a KilnError.
   * @param {RequestMessage} message
   * @param {OnInterim} [onInterim] what gets its interim replies
   */
  request(message, onInterim) {
    return this.start(message, onInterim).promise;
  }

  /**
   * Start an upload or a push: its sending end (credit comes from the receiver) and its
   * final reply; `onInterim` gets a push's `want`.
   * @param {RequestMessage} message
   * @param {OnInterim} [onInterim]
   */
  openUpload(message, onInterim) {
    const reply = this.start(message, onInterim);
    const sender = new Outgoing(this, message.id);
    this._outgoing.set(message.id, sender);
    return { sender, reply };
  }

  /**
   * Start a download: its receiving end (`info` first, then the chunks) and its final reply.
   * @param {RequestMessage & {window: number}} message
   */
  openDownload(message) {
    const reply = this.start(message);
    const receiver = new Incoming(this, message.id, message.window);
    this._incoming.set(message.id, receiver);
    return { receiver, reply };
  }

  /**
   * Start an exec with `stdin` and/or `stream` (1.2): its sending end for the command's
   * input (credit comes from the provider once the command runs), its receiving end for
   * the command's output (`window` is the first credit), whichever it asked for, and its
   * final reply. Throws at once (nothing sent) if the session refuses it, e.g.
   * UnsupportedVersionError from a hub below 1.2.
   * @param {RequestMessage & {stdin?: boolean | null, stream?: boolean | null, window?: number | null}} message
   */
  openExec(message) {
    const reply = this.start(message);
    const sender = message.stdin === true ? new Outgoing(this, message.id) : null;
    const receiver = message.stream === true ? new Incoming(this, message.id, message.window ?? 1) : null;
    if (sender !== null) this._outgoing.set(message.id, sender);
    if (receiver !== null) this._incoming.set(message.id, receiver);
    return { sender, receiver, reply };
  }

  /**
   * Start a connect (1.7): its sending end toward the container's port (the provider's
   * first credit, {@link Outgoing#ready}, says the port answered), its receiving end for
   * what the service writes (`window` is the first credit), and its final reply (`done`
   * once both ways ended). Throws at once (nothing sent) if the session refuses it, e.g.
   * UnsupportedVersionError from a hub below 1.7.
   * @param {RequestMessage & {window: number}} message
   */
  openConnect(message) {
    const reply = this.start(message);
    const sender = new Outgoing(this, message.id);
    const receiver = new Incoming(this, message.id, message.window);
    this._outgoing.set(message.id, sender);
    this._incoming.set(message.id, receiver);
    return { sender, receiver, reply };
  }

  /**
   * Ask the hub to stop `request` (no-op once it is over); it still ends with its one reply.
   * @param {number} request
   */
  cancel(request) {
    const waiting = this._waiting.findIndex((w) => w.message.id === request);
    if (waiting !== -1) {
      const [{ reply }] = this._waiting.splice(waiting, 1);
      this._interim.delete(request);
      reply.reject(new CancelledError("cancelled before it was sent"));
      return;
    }
    this.session.cancel(request);
    this.flush();
  }

  /** @param {number} stream @param {number} chunks */
  grant(stream, chunks) {
    this.session.grant(stream, chunks);
    this.flush();
  }

  /** End the session from this side (what is open fails with ConnectionClosedError) and close the socket. */
  async close() {
    this.session.close();
    this._dispatch();
    this.socket.close(CloseCode.NORMAL);
    await settlesWithin(this.finished.promise, CLOSE_WAIT_MS);
  }

  // --- reading -------------------------------------------------------------------------------

  /** @param {unknown} data */
  _take(data) {
    if (typeof data === "string") this.session.receiveText(data);
    else if (data instanceof ArrayBuffer) this.session.receiveBinary(new Uint8Array(data));
    else if (ArrayBuffer.isView(data)) {
      this.session.receiveBinary(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  }

  _dispatch() {
    for (const event of this.session.eventsReceived()) {
      switch (event.type) {
        case "welcomed":
          this._welcomed.resolve();
          break;
        case "replied":
          this._settle(event.request, event.reply, null);
          this._sendWaiting();
          break;
        case "failed":
          this._settle(event.request, null, event.error);
          this._sendWaiting();
          break;
        case "informed": {
          const receiver = this._incoming.get(event.request);
          if (event.info.type === "download_info") {
            if (receiver !== undefined && !receiver.info.settled) receiver.info.resolve(event.info);
          } else {
            this._interim.get(event.request)?.(event.info);
          }
          break;
        }
        case "credited":
          this._outgoing.get(event.stream)?._credited();
          break;
        case "dataReceived":
          this._incoming.get(event.stream)?._feed(event.data);
          break;
        case "streamEnded":
          this._incoming.get(event.stream)?._end();
          break;
        case "streamFailed":
          // Only a stream this side receives on fails so: its sender aborted, or overran it.
          this._incoming.get(event.stream)?.fail(event.error);
          break;
        case "closed":
          for (const end of [...this._incoming.values(), ...this._outgoing.values()]) end.fail(event.error);
          this._incoming.clear();
          this._outgoing.clear();
          this._interim.clear();
          this._welcomed.reject(event.error);
          this.onEvent(event);
          break;
        default:
          this.onEvent(event);
      }
    }
  }

  /**
   * @param {number} request
   * @param {Message | null} reply
   * @param {KilnError | null} error
   */
  _settle(request, reply, error) {
    const future = this._replies.get(request);
    const receiver = this._incoming.get(request);
    const sender = this._outgoing.get(request);
    this._replies.delete(request);
    this._incoming.delete(request);
    this._outgoing.delete(request);
    this._interim.delete(request);
    if (error !== null) {
      // The stream of a failed request fails with it.
      receiver?.fail(error);
      sender?.fail(error);
    } else {
      // A command may end before it read all its input: the rest is not sent.
      sender?._close();
      // The data ends (END) before the final reply; a reader must not wait past it.
      if (receiver !== undefined && !receiver.ended) {
        receiver.fail(new RemoteProtocolError(`the final reply to request ${request} came before the end of its stream`, {
          code: ErrorCode.OUT_OF_ORDER,
          re: request,
        }));
      }
    }
    if (future === undefined || future.settled) return;
    if (error !== null) future.reject(error);
    else future.resolve(/** @type {Message} */ (reply));
  }
}

/** @param {unknown} e */
function describe(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === "object" && e !== null && "type" in e) return `WebSocket ${String(/** @type {any} */ (e).type)}`;
  return String(e);
}
