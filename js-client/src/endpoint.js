/**
 * The requestor's connection to the hub: handshake, requests and replies, file streams.
 *
 * An {@link Endpoint} owns one WebSocket. Its message handler never waits: replies
 * settle the promise of the request they answer (matched by `re`), credits wake stream
 * senders, data frames land in a stream's buffer (bounded by the credit its receiver
 * granted), and anything else (`activity_lost`) goes to `onMessage`.
 *
 * Use: `const ep = await Endpoint.open(openSocket, url, {name, token})`, then
 * {@link Endpoint#request}, or {@link Endpoint#outgoing} / {@link Endpoint#incoming}
 * with {@link Endpoint#expect} for streams. {@link Endpoint#close} ends it.
 * @module
 */

import {
  ConnectionClosedError,
  KilnError,
  LocalProtocolError,
  RemoteProtocolError,
  TransferFailedError,
  UnsupportedVersionError,
  UsageError,
  errorFromCode,
} from "./errors.js";
import { Deferred, sleep } from "./deferred.js";
import { ErrorCode } from "./protocol/codes.js";
import { FrameKind, abortFrame, decodeFrame, encodeFrame } from "./protocol/frames.js";
import {
  FINAL_REPLIES,
  MAJOR_VERSION,
  MAX_ID,
  PROTOCOL_NAME,
  PROTOCOL_VERSION,
  parse,
  serialize,
} from "./protocol/messages.js";

export const SOFTWARE = "kiln-js/0.1.0";
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Bytes the socket may hold unsent before a stream sender waits for it to drain. */
const HIGH_WATER_BYTES = 8 * 1024 * 1024;

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

/** @typedef {(url: string, protocols: string[]) => Socket} OpenSocket */

/** The receiving end of a stream: iterate it for chunks; credit is granted as you go. */
export class Incoming {
  /**
   * @param {Endpoint} endpoint
   * @param {number} stream
   * @param {number} window the credit granted when the stream was opened
   */
  constructor(endpoint, stream, window) {
    this._endpoint = endpoint;
    this.stream = stream;
    this.window = window;
    /** @type {Deferred<import("../types/protocol.js").DownloadInfo>} */
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

  /** @param {number} kind @param {Uint8Array} payload */
  feed(kind, payload) {
    if (kind === FrameKind.DATA) {
      if (this._chunks.length >= this.window) {
        this.fail(new RemoteProtocolError(`stream ${this.stream}: peer sent beyond its credit`, { code: ErrorCode.FLOW_CONTROL }));
        return;
      }
      this._chunks.push(payload);
    } else if (kind === FrameKind.END) {
      this._ended = true;
    } else {
      const reason = new TextDecoder().decode(payload);
      this.fail(new TransferFailedError(`the sender aborted the stream: ${reason}`));
    }
    this._wake?.resolve();
  }

  /** @param {KilnError} error */
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
        this._endpoint.send({ type: "credit", stream: this.stream, chunks: grant });
      }
      yield chunk;
    }
  }
}

/** The sending end of a stream: {@link Outgoing#write} waits for credit, {@link Outgoing#end} finishes. */
export class Outgoing {
  /** @param {Endpoint} endpoint @param {number} stream @param {number} chunkBytes */
  constructor(endpoint, stream, chunkBytes) {
    this._endpoint = endpoint;
    this.stream = stream;
    this.chunkBytes = chunkBytes;
    this._credit = 0;
    /** @type {KilnError | null} */
    this._error = null;
    /** @type {Deferred<void> | null} */
    this._wake = null;
  }

  /** @param {number} chunks */
  grant(chunks) {
    this._credit += chunks;
    this._wake?.resolve();
  }

  /** @param {KilnError} error */
  fail(error) {
    if (this._error === null) this._error = error;
    this._wake?.resolve();
  }

  /**
   * Send `data` as DATA frames of at most `chunkBytes`, each spending one credit.
   * @param {Uint8Array} data
   */
  async write(data) {
    for (let start = 0; start < data.byteLength; start += this.chunkBytes) {
      while (this._credit <= 0 && this._error === null) {
        this._wake = new Deferred();
        await this._wake.promise;
        this._wake = null;
      }
      if (this._error !== null) throw this._error;
      this._credit -= 1;
      await this._endpoint.sendBinary(
        encodeFrame(FrameKind.DATA, this.stream, data.subarray(start, start + this.chunkBytes)),
      );
    }
  }

  async end() {
    if (this._error !== null) throw this._error;
    await this._endpoint.sendBinary(encodeFrame(FrameKind.END, this.stream));
  }

  /** Tell the receiver the stream is abandoned (best effort). @param {string} reason */
  abort(reason) {
    try {
      this._endpoint.sendRaw(abortFrame(this.stream, reason));
    } catch {
      // The connection is gone: the hub has dropped the stream already.
    }
  }
}

/** A live connection to the hub after the handshake. */
export class Endpoint {
  /**
   * Dial the hub at `url` and exchange hello/welcome.
   *
   * Throws {@link ConnectionClosedError} when the hub cannot be reached,
   * {@link UnsupportedVersionError} when it speaks another protocol or major version,
   * or the error the hub answered with (e.g. an UnauthorizedError).
   * @param {OpenSocket} openSocket
   * @param {string} url
   * @param {{name: string, token?: string | null, timeoutMs?: number,
   *          onMessage?: (message: import("../types/protocol.js").Message) => void}} options
   * @returns {Promise<Endpoint>}
   */
  static async open(openSocket, url, options) {
    const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    /** @type {Socket} */
    let socket;
    try {
      socket = openSocket(url, [PROTOCOL_NAME]);
    } catch (e) {
      throw new ConnectionClosedError(`cannot reach the hub at ${url}: ${describe(e)}`, { cause: e });
    }
    const endpoint = new Endpoint(socket, options.onMessage);
    const timer = setTimeout(
      () => endpoint._fail(new ConnectionClosedError(`the hub at ${url} did not complete the handshake within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      await endpoint._opened.promise;
      if (socket.protocol !== "" && socket.protocol !== PROTOCOL_NAME) {
        throw new UnsupportedVersionError(`the hub at ${url} speaks ${socket.protocol}, not ${PROTOCOL_NAME}`);
      }
      endpoint.send({
        type: "hello",
        version: PROTOCOL_VERSION,
        role: "requestor",
        name: options.name,
        token: options.token ?? null,
        software: SOFTWARE,
      });
      const welcome = await endpoint._welcome.promise;
      const major = Number(welcome.version.split(".")[0]);
      if (major !== MAJOR_VERSION) {
        throw new UnsupportedVersionError(
          `the hub speaks protocol version ${welcome.version}; this client speaks ${PROTOCOL_VERSION}`,
        );
      }
      endpoint.welcome = welcome;
      endpoint.limits = welcome.limits;
      return endpoint;
    } catch (e) {
      endpoint._fail(e instanceof KilnError ? e : new ConnectionClosedError(describe(e), { cause: e }));
      socket.close(1000);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * @param {Socket} socket
   * @param {((message: import("../types/protocol.js").Message) => void) | undefined} onMessage
   */
  constructor(socket, onMessage) {
    this.socket = socket;
    this._onMessage = onMessage ?? (() => {});
    /** @type {import("../types/protocol.js").Welcome | null} */
    this.welcome = null;
    /** @type {import("../types/protocol.js").Limits} */
    this.limits = /** @type {any} */ (null);
    this._nextId = 0;
    /** @type {Map<number, Deferred<import("../types/protocol.js").Message>>} */
    this._replies = new Map();
    /** @type {Map<number, Incoming>} */
    this._incoming = new Map();
    /** @type {Map<number, Outgoing>} */
    this._outgoing = new Map();
    /** @type {KilnError | null} why the connection ended, once it has */
    this.closed = null;
    /** @type {Deferred<void>} */
    this._opened = new Deferred();
    /** @type {Deferred<import("../types/protocol.js").Welcome>} */
    this._welcome = new Deferred();
    /** @type {Deferred<void>} settles when the socket has closed */
    this.finished = new Deferred();
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => this._opened.resolve());
    socket.addEventListener("message", (event) => this._take(event.data));
    socket.addEventListener("error", (event) => {
      const text = describe(event.error ?? event.message ?? event);
      this._fail(
        /subprotocol/i.test(text)
          ? new UnsupportedVersionError(`the hub does not speak ${PROTOCOL_NAME}: ${text}`)
          : new ConnectionClosedError(`the connection to the hub failed: ${text}`),
      );
    });
    socket.addEventListener("close", (event) => {
      const detail = event.reason ? ` (${event.reason})` : "";
      this._fail(new ConnectionClosedError(`the connection to the hub closed with code ${event.code}${detail}`));
      this.finished.resolve();
    });
  }

  newId() {
    this._nextId = this._nextId < MAX_ID ? this._nextId + 1 : 1;
    return this._nextId;
  }

  /**
   * Send one JSON message, validated first: an invalid one is the caller's mistake (a
   * UsageError with the violation's code) and is never sent.
   * @param {Record<string, unknown>} message
   */
  send(message) {
    let text;
    try {
      text = serialize(message);
    } catch (e) {
      if (!(e instanceof LocalProtocolError)) throw e;
      throw new UsageError(`refusing to send an invalid '${message.type}': ${e.message}`, { code: e.code });
    }
    this.sendRaw(text);
  }

  /** @param {string | Uint8Array} data */
  sendRaw(data) {
    if (this.closed !== null) throw this.closed;
    this.socket.send(data);
  }

  /**
   * Send a binary frame, first waiting while the socket holds too much unsent data.
   * @param {Uint8Array} data
   */
  async sendBinary(data) {
    while (this.closed === null && this.socket.bufferedAmount > HIGH_WATER_BYTES) await sleep(5);
    this.sendRaw(data);
  }

  /**
   * Register interest in the final reply to `requestId` (call before sending the request).
   * An `error` reply rejects it with the matching {@link KilnError}.
   * @param {number} requestId
   */
  expect(requestId) {
    if (this.closed !== null) throw this.closed;
    /** @type {Deferred<import("../types/protocol.js").Message>} */
    const reply = new Deferred();
    this._replies.set(requestId, reply);
    return reply;
  }

  /**
   * Send a request and wait for its final reply; an `error` reply is thrown as a KilnError.
   * @param {Record<string, unknown> & {id: number}} message
   */
  async request(message) {
    const reply = this.expect(message.id);
    try {
      this.send(message);
      return await reply.promise;
    } finally {
      this._replies.delete(message.id);
    }
  }

  /** Drop everything registered under `requestId`. @param {number} requestId */
  forget(requestId) {
    this._replies.delete(requestId);
    this._incoming.delete(requestId);
    this._outgoing.delete(requestId);
  }

  /** @param {number} stream @param {number} window */
  incoming(stream, window) {
    const receiver = new Incoming(this, stream, window);
    this._incoming.set(stream, receiver);
    return receiver;
  }

  /** @param {number} stream */
  outgoing(stream) {
    const sender = new Outgoing(this, stream, this.limits.chunk_bytes);
    this._outgoing.set(stream, sender);
    return sender;
  }

  /** Close the connection and wait (up to 5 s) until it is closed. */
  async close() {
    if (this.closed === null) this._fail(new ConnectionClosedError("the connection to the hub was closed by this requestor"));
    try {
      this.socket.close(1000);
    } catch {
      // already closing
    }
    await Promise.race([this.finished.promise, sleep(5000)]);
  }

  /** @param {KilnError} reason */
  _fail(reason) {
    if (this.closed !== null) return;
    this.closed = reason;
    this._opened.reject(reason);
    this._welcome.reject(reason);
    for (const reply of this._replies.values()) reply.reject(reason);
    for (const receiver of this._incoming.values()) receiver.fail(reason);
    for (const sender of this._outgoing.values()) sender.fail(reason);
    this._replies.clear();
    this._incoming.clear();
    this._outgoing.clear();
    this._onMessage({ type: "error", re: null, code: reason.code, message: reason.message, provider: null });
  }

  /** @param {unknown} data */
  _take(data) {
    if (typeof data === "string") this._takeText(data);
    else if (data instanceof ArrayBuffer) this._takeBinary(new Uint8Array(data));
    else if (ArrayBuffer.isView(data)) this._takeBinary(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** @param {string} text */
  _takeText(text) {
    /** @type {import("../types/protocol.js").Message} */
    let message;
    try {
      message = parse(text);
    } catch (e) {
      if (!(e instanceof RemoteProtocolError)) throw e;
      if (this.welcome === null) {
        this._welcome.reject(new RemoteProtocolError(`the hub sent an invalid handshake reply: ${e.message}`, { code: e.code }));
      }
      this._invalidReply(text, e);
      return;
    }
    if (this.welcome === null && !this._welcome.settled) {
      if (message.type === "welcome") this._welcome.resolve(message);
      else if (message.type === "error") {
        this._welcome.reject(errorFromCode(message.code, `the hub refused us: ${message.message}`));
      } else this._welcome.reject(new RemoteProtocolError(`expected welcome from the hub, got '${message.type}'`));
      return;
    }
    if (message.type === "credit") {
      this._outgoing.get(message.stream)?.grant(message.chunks);
      return;
    }
    if (message.type === "download_info") {
      const receiver = this._incoming.get(message.re);
      if (receiver !== undefined && !receiver.info.settled) receiver.info.resolve(message);
      return;
    }
    const re = "re" in message ? message.re : null;
    if (re !== null && re !== undefined && FINAL_REPLIES.has(message.type)) {
      const reply = this._replies.get(re);
      if (message.type === "error") {
        const error = errorFromCode(message.code, message.message, message.provider);
        // The stream of a failed request fails with it.
        this._incoming.get(re)?.fail(error);
        this._outgoing.get(re)?.fail(error);
        this._incoming.delete(re);
        this._outgoing.delete(re);
        reply?.reject(error);
      } else {
        reply?.resolve(message);
      }
      return;
    }
    this._onMessage(message);
  }

  /**
   * An invalid message from the hub cannot be answered; if it names a request we wait
   * on, that request fails (rather than waiting forever), else it is dropped.
   * @param {string} text
   * @param {RemoteProtocolError} violation
   */
  _invalidReply(text, violation) {
    let re;
    try {
      re = JSON.parse(text)?.re;
    } catch {
      return;
    }
    const reply = typeof re === "number" ? this._replies.get(re) : undefined;
    if (reply === undefined) return;
    const error = new RemoteProtocolError(`the hub's reply to request ${re} is invalid: ${violation.message}`, {
      code: violation.code,
    });
    this._incoming.get(re)?.fail(error);
    this._outgoing.get(re)?.fail(error);
    reply.reject(error);
  }

  /** @param {Uint8Array} data */
  _takeBinary(data) {
    if (this.limits === null) return;
    let frame;
    try {
      frame = decodeFrame(data, this.limits.chunk_bytes);
    } catch (e) {
      if (!(e instanceof RemoteProtocolError)) throw e;
      return; // an invalid frame from the hub is dropped; its stream's reply tells the outcome
    }
    const receiver = this._incoming.get(frame.stream);
    if (receiver === undefined) return; // a stream we already gave up on
    receiver.feed(frame.kind, frame.payload);
    if (frame.kind !== FrameKind.DATA) this._incoming.delete(frame.stream);
  }
}

/** @param {unknown} e */
function describe(e) {
  if (e instanceof Error) return e.message;
  if (typeof e === "object" && e !== null && "type" in e) return `WebSocket ${String(/** @type {any} */ (e).type)}`;
  return String(e);
}
