/**
 * Connections to a port of a container (protocol 1.7, PROTOCOL.md §5.1), for both platforms.
 *
 * `act.connect(port)` opens a `connect` request: a stream each way under its id, the bytes as
 * they are. A {@link PortChannel} is that request as promises, with no platform in it:
 * {@link PortChannel#read} takes what the service wrote (credit goes back as chunks are
 * taken, so a reader that stops stops the service's writes), {@link PortChannel#write}
 * waits for the provider's credit, {@link PortChannel#end} half-closes (the service reads
 * EOF), {@link PortChannel#abort} resets. Each platform wraps it: a browser (and this module)
 * in a {@link PortSocket}, an object with a WebSocket's surface; Node in a `stream.Duplex`
 * (`./node/ports.js`), which also forwards a local port.
 *
 * `act.publish(port)` asks the hub for an unguessable URL that serves the port over HTTP: a
 * {@link Publication}, ended by its `revoke()`.
 * @module
 */

import { TransferFailedError, UsageError } from "./errors.js";

/** @typedef {import("./errors.js").KilnError} KilnError */
/** @typedef {import("./connection.js").Incoming} Incoming */
/** @typedef {import("./connection.js").Outgoing} Outgoing */
/** @typedef {import("./deferred.js").Deferred<import("../types/protocol.js").Message>} Reply */

/**
 * The options of `act.connect` and `act.forward`.
 * @typedef {object} PortOptions
 * @property {AbortSignal} [signal] gives up opening the connection (CancelledError); an open one is not touched
 */

/**
 * The options of `act.forward` (Node): the local address to listen on.
 * @typedef {PortOptions & {localPort?: number, host?: string}} ForwardOptions
 */

/**
 * A local port that carries each connection it accepts to the container's port, over a
 * connect of its own (Node's `act.forward`). `close()` stops listening and resets the
 * connections it carries.
 * @typedef {object} Forward
 * @property {number} port the local port it listens on
 * @property {string} host the local address it listens on
 * @property {() => Promise<void>} close
 */

/**
 * What `act.connect` gives, by platform: Node a `stream.Duplex` (described here by the part
 * of it a program uses; `import("node:stream").Duplex` is its real type), a browser a
 * {@link PortSocket}.
 * @typedef {PortSocket | NodeDuplex} PortStream
 */

/**
 * A Node `stream.Duplex`: writes (with backpressure) go toward the service, `end()`
 * half-closes, `'end'` comes when the service closed its side, `destroy(err)` resets.
 * @typedef {AsyncIterable<any> & {
 *   write(chunk: Uint8Array | string, callback?: (error?: Error | null) => void): boolean,
 *   end(callback?: () => void): unknown,
 *   destroy(error?: Error): unknown,
 *   pipe<T>(destination: T, options?: {end?: boolean}): T,
 *   on(event: string, listener: (...args: any[]) => void): unknown,
 *   once(event: string, listener: (...args: any[]) => void): unknown,
 * }} NodeDuplex
 */

/**
 * How a platform presents a connection, and whether it forwards local ports (Node only).
 * @typedef {object} Ports
 * @property {(channel: PortChannel) => PortStream} wrap
 * @property {((open: () => Promise<PortChannel>, options: ForwardOptions) => Promise<Forward>) | null} forward
 */

/** One connection to a port of a container, as promises: what each platform's wrapper drives. */
export class PortChannel {
  /**
   * @param {{sender: Outgoing, receiver: Incoming, reply: Reply}} streams from `Connection#openConnect`
   * @param {number} port
   * @param {(bytes: number) => void} onMoved counts the bytes that move (the activity's `moved`)
   */
  constructor(streams, port, onMoved) {
    this._sender = streams.sender;
    this._receiver = streams.receiver;
    this._chunks = this._receiver[Symbol.asyncIterator]();
    this.port = port;
    this._onMoved = onMoved;
    this._ended = false;
    this._aborted = false;
    /**
     * Settles when the connection is over: with the bytes that came out of the container
     * once both ways ended, or with why it failed (a reset is a TransferFailedError).
     * @type {Promise<number>}
     */
    this.done = streams.reply.promise.then((reply) => /** @type {import("../types/protocol.js").Done} */ (reply).bytes ?? 0);
    this.done.catch(() => {});
  }

  /**
   * The next bytes the service wrote, or null once it closed its side (EOF). Throws why
   * the connection broke (a reset, the provider lost, the hub gone).
   * @returns {Promise<Uint8Array | null>}
   */
  async read() {
    const next = await this._chunks.next();
    if (next.done) return null;
    this._onMoved(next.value.byteLength);
    return next.value;
  }

  /**
   * Send `data` toward the service, waiting for the provider's credit: a service that does
   * not read slows the writer. Throws why the connection broke, or a UsageError once this
   * side ended its writes.
   * @param {Uint8Array} data
   */
  async write(data) {
    if (this._ended) throw new UsageError(`the connection to port ${this.port} was ended by this side: no more writes`);
    if (data.byteLength === 0) return;
    await this._sender.write(data);
    if (this._sender.closed) throw new TransferFailedError(`the connection to port ${this.port} is over`);
    this._onMoved(data.byteLength);
  }

  /** No more writes from this side: the service reads EOF (a half-close); its bytes still come. No-op the second time. */
  end() {
    if (this._ended) return;
    this._ended = true;
    if (this._sender.error === null) this._sender.end();
  }

  /**
   * Reset the connection (an ABORT frame): the service sees its connection reset, and
   * {@link PortChannel#done} fails. No-op once the connection is over.
   * @param {string} reason
   */
  abort(reason) {
    this._ended = true;
    this._aborted = true;
    this._sender.abort(reason);
    this._receiver.fail(new TransferFailedError(`the connection to port ${this.port} was reset by this side: ${reason}`));
  }

  /** Whether this side reset the connection. */
  get aborted() {
    return this._aborted;
  }
}

/** The states of a {@link PortSocket}, a WebSocket's. */
const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/**
 * A connection to a port of a container with the surface of a browser's WebSocket:
 * `send(data)`, `close()`, `readyState`, `binaryType`, `bufferedAmount`, the events `open`,
 * `message` (`event.data`: a Blob, or an ArrayBuffer with `binaryType = "arraybuffer"`),
 * `error` and `close` (`event.code`, `event.reason`, `event.wasClean`), through
 * `onopen`/`onmessage`/`onerror`/`onclose` or `addEventListener`. It is open already when
 * `act.connect` gives it; `open` fires on the next task, and `message` events start with
 * the first listener of them, so none is lost to a handler set just after.
 *
 * The bytes are a TCP stream's, not messages: one `send` may arrive in several pieces, and
 * several in one. `close()` ends this side's writes once what was sent is out; the socket
 * closes when the service has closed its side too. The service closing its side first
 * closes this one (a WebSocket has no half-close).
 *
 * Instead of events, a program may take the bytes with `await sock.read()` (null at EOF:
 * then `sock.close()`, or keep writing), and write with `await sock.write(data)`, which waits
 * for the provider's credit. Not both: `read()` once `message` events are listened to is a
 * UsageError.
 */
export class PortSocket extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  /** @param {PortChannel} channel */
  constructor(channel) {
    super();
    this.CONNECTING = CONNECTING;
    this.OPEN = OPEN;
    this.CLOSING = CLOSING;
    this.CLOSED = CLOSED;
    this._channel = channel;
    /** @type {number} CONNECTING, OPEN, CLOSING or CLOSED */
    this.readyState = OPEN;
    /** @type {"blob" | "arraybuffer"} what a `message` event's `data` is */
    this.binaryType = typeof Blob === "undefined" ? "arraybuffer" : "blob";
    /** Bytes given to `send` not yet sent. */
    this.bufferedAmount = 0;
    /** The container's port. */
    this.port = channel.port;
    /** What the socket speaks: no subprotocol. */
    this.protocol = "";
    /** @type {Promise<void>} the writes in order: each `send` after the one before */
    this._writes = Promise.resolve();
    this._pumping = false;
    this._reading = false;
    /** @type {Record<string, ((event: any) => void) | null>} */
    this._handlers = { open: null, message: null, error: null, close: null };
    setTimeout(() => this._fire("open"), 0);
    channel.done.then(
      () => this._closed(1000, "", true),
      (/** @type {KilnError} */ e) => {
        if (!channel.aborted) this._fire("error", { error: e, message: e.message });
        this._closed(1006, e.message.slice(0, 123), false);
      },
    );
  }

  /** @returns {((event: Event) => void) | null} */
  get onopen() {
    return this._handlers.open;
  }
  set onopen(handler) {
    this._handle("open", handler);
  }
  /** @returns {((event: MessageEvent) => void) | null} */
  get onmessage() {
    return this._handlers.message;
  }
  set onmessage(handler) {
    this._handle("message", handler);
  }
  /** @returns {((event: Event) => void) | null} */
  get onerror() {
    return this._handlers.error;
  }
  set onerror(handler) {
    this._handle("error", handler);
  }
  /** @returns {((event: CloseEvent) => void) | null} */
  get onclose() {
    return this._handlers.close;
  }
  set onclose(handler) {
    this._handle("close", handler);
  }

  /**
   * As EventTarget's; a first `message` listener starts the messages.
   * @param {string} type
   * @param {EventListenerOrEventListenerObject | null} listener
   * @param {boolean | AddEventListenerOptions} [options]
   */
  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (type === "message") this._pump();
  }

  /**
   * Send `data` (a string as UTF-8, an ArrayBuffer, a typed array or DataView, a Blob)
   * after what was sent before. Throws an InvalidStateError DOMException once `close()`
   * was called; a failure of the connection comes as `error` and `close` events.
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   */
  send(data) {
    if (this.readyState !== OPEN) throw new DOMException("the socket is closing or closed", "InvalidStateError");
    const size = sizeOf(data);
    this.bufferedAmount += size;
    this._writes = this._writes
      .then(async () => {
        await this._channel.write(await bytesOf(data));
      })
      // The connection broke: `done` fails with why, and fires `error` and `close`.
      .catch(() => {})
      .finally(() => {
        this.bufferedAmount -= size;
      });
  }

  /**
   * Write `data` once the provider's credit lets it go, resolving when it is sent. Throws
   * why the connection broke, or a UsageError once `close()` was called.
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   */
  async write(data) {
    if (this.readyState !== OPEN) throw new UsageError("the socket is closing or closed: no more writes");
    sizeOf(data);
    const bytes = await bytesOf(data);
    const before = this._writes;
    const mine = before.then(() => this._channel.write(bytes));
    this._writes = mine.catch(() => {});
    await mine;
  }

  /**
   * The next bytes the service wrote, or null once it closed its side. Throws why the
   * connection broke, or a UsageError while `message` events take the bytes.
   * @returns {Promise<Uint8Array | null>}
   */
  async read() {
    if (this._pumping) throw new UsageError("this socket's bytes go to its message events: read() takes none");
    if (this._reading) throw new UsageError("a read() is under way already: await it first");
    this._reading = true;
    try {
      return await this._channel.read();
    } finally {
      this._reading = false;
    }
  }

  /**
   * End this side's writes once what was sent is out (the service reads EOF); the socket
   * closes (`close` event) when the service has closed its side too. `code` and `reason`
   * are checked as a WebSocket checks them (1000 or 3000-4999; at most 123 bytes), for its
   * surface: TCP carries neither.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code, reason) {
    if (code !== undefined && code !== 1000 && !(Number.isInteger(code) && code >= 3000 && code <= 4999)) {
      throw new DOMException(`close code ${code} is neither 1000 nor in 3000-4999`, "InvalidAccessError");
    }
    if (reason !== undefined && new TextEncoder().encode(reason).byteLength > 123) {
      throw new DOMException("a close reason is at most 123 bytes", "SyntaxError");
    }
    if (this.readyState !== OPEN) return;
    this.readyState = CLOSING;
    this._writes = this._writes.then(() => this._channel.end());
  }

  /**
   * Reset the connection now: what was not sent is dropped, and the service sees a reset.
   * @param {string} [reason]
   */
  abort(reason = "reset by the requestor") {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSING;
    this._channel.abort(reason);
  }

  /**
   * @param {string} type
   * @param {((event: any) => void) | null} handler
   */
  _handle(type, handler) {
    this._handlers[type] = typeof handler === "function" ? handler : null;
    if (type === "message" && handler !== null) this._pump();
  }

  /**
   * Dispatch an event of `type` with `fields`, to its listeners and its `on…` handler.
   * @param {string} type
   * @param {Record<string, unknown>} [fields]
   */
  _fire(type, fields = {}) {
    const event = Object.assign(new Event(type), fields);
    this.dispatchEvent(event);
    this._handlers[type]?.call(this, event);
  }

  /** Take the bytes as `message` events, one per chunk, until EOF (then close) or a failure. */
  _pump() {
    if (this._pumping) return;
    this._pumping = true;
    // After `open`, as a WebSocket's messages come after its open event.
    setTimeout(async () => {
      try {
        for (;;) {
          const chunk = await this._channel.read();
          if (chunk === null) break;
          const data = this.binaryType === "blob" ? new Blob([/** @type {Uint8Array<ArrayBuffer>} */ (chunk)]) : copyOut(chunk);
          this._fire("message", { data });
        }
        this.close();
      } catch {
        // The connection broke: `done` fails with why, and fires `error` and `close`.
      }
    }, 0);
  }

  /**
   * @param {number} code
   * @param {string} reason
   * @param {boolean} wasClean
   */
  _closed(code, reason, wasClean) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    // After the messages already taken, and after `open`.
    setTimeout(() => this._fire("close", { code, reason, wasClean }), 0);
  }
}

/** The platform-neutral presentation: a {@link PortSocket}, and no forwarding (a browser cannot listen). */
export const SOCKET_PORTS = Object.freeze(/** @type {Ports} */ ({ wrap: (channel) => new PortSocket(channel), forward: null }));

/** A port of an activity served by the hub as HTTP (1.7): `url` until {@link Publication#revoke}. */
export class Publication {
  /**
   * @param {import("../types/protocol.js").Published} published
   * @param {number} port
   * @param {(token: string) => Promise<void>} unpublish
   */
  constructor(published, port, unpublish) {
    /** @type {string} where a browser reaches the port (`…/s/<token>/`); keep it as a secret is kept */
    this.url = published.url;
    /** @type {string} the capability that names it (what `act.unpublish` takes) */
    this.token = published.token;
    this.port = port;
    this._unpublish = unpublish;
    /** @type {Promise<void> | null} */
    this._revoked = null;
  }

  /** The URL serves nothing from now on (404), and the connections it carries close. Safe to call twice. */
  revoke() {
    this._revoked ??= this._unpublish(this.token);
    return this._revoked;
  }

  toString() {
    return `Publication of port ${this.port} at ${this.url}`;
  }
}

/**
 * `port` checked: a TCP port, 1 to 65535 (UsageError otherwise, before anything is sent).
 * @param {unknown} port
 * @returns {number}
 */
export function checkPort(port) {
  if (!(Number.isInteger(port) && /** @type {number} */ (port) >= 1 && /** @type {number} */ (port) <= 65535)) {
    throw new UsageError(`a port is a whole number from 1 to 65535, not ${JSON.stringify(port)}`);
  }
  return /** @type {number} */ (port);
}

/**
 * The size in bytes of what `send` takes (a string as UTF-8); a UsageError for anything else.
 * @param {unknown} data
 */
function sizeOf(data) {
  if (typeof data === "string") return new TextEncoder().encode(data).byteLength;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return data.byteLength;
  if (typeof Blob !== "undefined" && data instanceof Blob) return data.size;
  throw new UsageError("send takes a string, an ArrayBuffer, a typed array or DataView, or a Blob");
}

/**
 * What `send` and `write` take, as bytes (a view of it, not a copy, when it is bytes already).
 * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
 * @returns {Promise<Uint8Array>}
 */
async function bytesOf(data) {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof Blob !== "undefined" && data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  sizeOf(data); // throws: what it is not
  return new Uint8Array(0);
}

/**
 * An ArrayBuffer holding exactly `chunk`'s bytes (a chunk is a view into a larger frame).
 * @param {Uint8Array} chunk
 * @returns {ArrayBuffer}
 */
function copyOut(chunk) {
  return chunk.slice().buffer;
}
