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
export type KilnError = import("./errors.js").KilnError;
export type Incoming = import("./connection.js").Incoming;
export type Outgoing = import("./connection.js").Outgoing;
export type Reply = import("./deferred.js").Deferred<import("../protocol.js").Message>;
export type PortOptions = {
    /**
     * gives up opening the connection (CancelledError); an open one is not touched
     */
    signal?: AbortSignal;
};
export type ForwardOptions = PortOptions & {
    localPort?: number;
    host?: string;
};
export type Forward = {
    /**
     * the local port it listens on
     */
    port: number;
    /**
     * the local address it listens on
     */
    host: string;
    close: () => Promise<void>;
};
export type PortStream = PortSocket | NodeDuplex;
export type NodeDuplex = AsyncIterable<any> & {
    write(chunk: Uint8Array | string, callback?: (error?: Error | null) => void): boolean;
    end(callback?: () => void): unknown;
    destroy(error?: Error): unknown;
    pipe<T>(destination: T, options?: {
        end?: boolean;
    }): T;
    on(event: string, listener: (...args: any[]) => void): unknown;
    once(event: string, listener: (...args: any[]) => void): unknown;
};
export type Ports = {
    wrap: (channel: PortChannel) => PortStream;
    forward: ((open: () => Promise<PortChannel>, options: ForwardOptions) => Promise<Forward>) | null;
};
/** @typedef {import("./errors.js").KilnError} KilnError */
/** @typedef {import("./connection.js").Incoming} Incoming */
/** @typedef {import("./connection.js").Outgoing} Outgoing */
/** @typedef {import("./deferred.js").Deferred<import("../protocol.js").Message>} Reply */
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
export declare class PortChannel {
    port: number;
    /**
     * Settles when the connection is over: with the bytes that came out of the container
     * once both ways ended, or with why it failed (a reset is a TransferFailedError).
     * @type {Promise<number>}
     */
    done: Promise<number>;
    /**
     * @param {{sender: Outgoing, receiver: Incoming, reply: Reply}} streams from `Connection#openConnect`
     * @param {number} port
     * @param {(bytes: number) => void} onMoved counts the bytes that move (the activity's `moved`)
     */
    constructor(streams: {
        sender: Outgoing;
        receiver: Incoming;
        reply: Reply;
    }, port: number, onMoved: (bytes: number) => void);
    /**
     * The next bytes the service wrote, or null once it closed its side (EOF). Throws why
     * the connection broke (a reset, the provider lost, the hub gone).
     * @returns {Promise<Uint8Array | null>}
     */
    read(): Promise<Uint8Array | null>;
    /**
     * Send `data` toward the service, waiting for the provider's credit: a service that does
     * not read slows the writer. Throws why the connection broke, or a UsageError once this
     * side ended its writes.
     * @param {Uint8Array} data
     */
    write(data: Uint8Array): Promise<void>;
    /** No more writes from this side: the service reads EOF (a half-close); its bytes still come. No-op the second time. */
    end(): void;
    /**
     * Reset the connection (an ABORT frame): the service sees its connection reset, and
     * {@link PortChannel#done} fails. No-op once the connection is over.
     * @param {string} reason
     */
    abort(reason: string): void;
    /** Whether this side reset the connection. */
    get aborted(): boolean;
}
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
export declare class PortSocket extends EventTarget {
    CONNECTING: number;
    OPEN: number;
    CLOSING: number;
    CLOSED: number;
    /** @type {number} CONNECTING, OPEN, CLOSING or CLOSED */
    readyState: number;
    /** @type {"blob" | "arraybuffer"} what a `message` event's `data` is */
    binaryType: "blob" | "arraybuffer";
    /** Bytes given to `send` not yet sent. */
    bufferedAmount: number;
    /** The container's port. */
    port: number;
    /** What the socket speaks: no subprotocol. */
    protocol: string;
    static CONNECTING: number;
    static OPEN: number;
    static CLOSING: number;
    static CLOSED: number;
    /** @param {PortChannel} channel */
    constructor(channel: PortChannel);
    /** @returns {((event: Event) => void) | null} */
    get onopen(): ((event: Event) => void) | null;
    set onopen(handler: ((event: Event) => void) | null);
    /** @returns {((event: MessageEvent) => void) | null} */
    get onmessage(): ((event: MessageEvent) => void) | null;
    set onmessage(handler: ((event: MessageEvent) => void) | null);
    /** @returns {((event: Event) => void) | null} */
    get onerror(): ((event: Event) => void) | null;
    set onerror(handler: ((event: Event) => void) | null);
    /** @returns {((event: CloseEvent) => void) | null} */
    get onclose(): ((event: CloseEvent) => void) | null;
    set onclose(handler: ((event: CloseEvent) => void) | null);
    /**
     * As EventTarget's; a first `message` listener starts the messages.
     * @param {string} type
     * @param {EventListenerOrEventListenerObject | null} listener
     * @param {boolean | AddEventListenerOptions} [options]
     */
    addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
    /**
     * Send `data` (a string as UTF-8, an ArrayBuffer, a typed array or DataView, a Blob)
     * after what was sent before. Throws an InvalidStateError DOMException once `close()`
     * was called; a failure of the connection comes as `error` and `close` events.
     * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
     */
    send(data: string | ArrayBuffer | ArrayBufferView | Blob): void;
    /**
     * Write `data` once the provider's credit lets it go, resolving when it is sent. Throws
     * why the connection broke, or a UsageError once `close()` was called.
     * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
     */
    write(data: string | ArrayBuffer | ArrayBufferView | Blob): Promise<void>;
    /**
     * The next bytes the service wrote, or null once it closed its side. Throws why the
     * connection broke, or a UsageError while `message` events take the bytes.
     * @returns {Promise<Uint8Array | null>}
     */
    read(): Promise<Uint8Array | null>;
    /**
     * End this side's writes once what was sent is out (the service reads EOF); the socket
     * closes (`close` event) when the service has closed its side too. `code` and `reason`
     * are checked as a WebSocket checks them (1000 or 3000-4999; at most 123 bytes), for its
     * surface: TCP carries neither.
     * @param {number} [code]
     * @param {string} [reason]
     */
    close(code?: number, reason?: string): void;
    /**
     * Reset the connection now: what was not sent is dropped, and the service sees a reset.
     * @param {string} [reason]
     */
    abort(reason?: string): void;
}
/** The platform-neutral presentation: a {@link PortSocket}, and no forwarding (a browser cannot listen). */
export declare const SOCKET_PORTS: Readonly<Ports>;
/** A port of an activity served by the hub as HTTP (1.7): `url` until {@link Publication#revoke}. */
export declare class Publication {
    /** @type {string} where a browser reaches the port (`…/s/<token>/`); keep it as a secret is kept */
    url: string;
    /** @type {string} the capability that names it (what `act.unpublish` takes) */
    token: string;
    port: number;
    /**
     * @param {import("../protocol.js").Published} published
     * @param {number} port
     * @param {(token: string) => Promise<void>} unpublish
     */
    constructor(published: import("../protocol.js").Published, port: number, unpublish: (token: string) => Promise<void>);
    /** The URL serves nothing from now on (404), and the connections it carries close. Safe to call twice. */
    revoke(): Promise<void>;
    toString(): string;
}
/**
 * `port` checked: a TCP port, 1 to 65535 (UsageError otherwise, before anything is sent).
 * @param {unknown} port
 * @returns {number}
 */
export declare function checkPort(port: unknown): number;
