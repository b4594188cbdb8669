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
import { Deferred } from "./deferred.js";
import { Session } from "./protocol/session.js";
export type KilnError = import("./errors.js").KilnError;
export type Message = import("../protocol.js").Message;
export type DownloadInfo = import("../protocol.js").DownloadInfo;
export type Interim = import("../protocol.js").Interim;
export type OnInterim = (info: Interim) => void;
export type SessionEvent = import("../protocol.js").SessionEvent;
export type RequestMessage = Record<string, unknown> & {
    id: number;
};
export type Waiting = {
    message: RequestMessage;
    reply: Deferred<Message>;
};
/**
 * `url` when it is a hub's address: ws:// or wss://, a host, and a port from 1 to 65535 if
 * it names one ("ws://hub.example:7465", "wss://10.0.0.2:7465/"). Otherwise throws a
 * {@link UsageError} saying what is wrong (no scheme, http://, no host, a bad port) and what
 * a hub URL looks like. Python's `kiln.connection.check_hub_url` judges alike.
 * @param {unknown} url
 * @returns {string}
 */
export declare function checkHubUrl(url: unknown): string;
/** The most hub URLs one client takes (the hubs of one market it may move between). */
export declare const MAX_HUB_URLS = 16;
/**
 * The hub URLs `urls` names, in order, each once: one URL, several separated by commas
 * ("ws://a:7465,ws://b:7465"), or an array of those. Throws a {@link UsageError} naming the
 * first that is not a hub's ({@link checkHubUrl}), for none at all, or for more than
 * {@link MAX_HUB_URLS}. Python's `kiln.connection.hub_urls` reads alike.
 * @param {unknown} urls
 * @returns {string[]}
 */
export declare function hubUrls(urls: unknown): string[];
/**
 * The hubs a client may dial ({@link hubUrls}) and the one it is on. A client dials them in
 * {@link HubRing#order}: the one it is on (at first, the first given), then each other in
 * turn, round robin; the one that answers becomes the one it is on ({@link HubRing#moved}).
 * Its backoff counts full rounds, not single dials. Mirrors Python's `kiln.connection.HubRing`.
 */
export declare class HubRing {
    /** @type {readonly string[]} */
    urls: readonly string[];
    /** @param {unknown} urls */
    constructor(urls: unknown);
    /** The hub the client is on (or was on last). */
    get current(): string;
    /** One round of dials: the current hub, then the others in turn. @returns {string[]} */
    order(): string[];
    /** The client is on `url` now (one of {@link HubRing#urls}). @param {string} url */
    moved(url: string): void;
}
export type Socket = {
    protocol: string;
    readyState: number;
    bufferedAmount: number;
    binaryType: string;
    send: (data: string | Uint8Array) => void;
    close: (code?: number, reason?: string) => void;
    addEventListener: (type: string, listener: (event: any) => void) => void;
};
/**
 * Why dialling the hub at `url` failed, said plainly when there is more to say than the
 * error's own message (else null): a certificate this side does not trust above all, and a
 * hint when ws:// and wss:// seem mixed up. Node (`ws`) gives the error's code; a browser
 * tells nothing.
 * @param {string} url
 * @param {any} error
 * @returns {string | null}
 */
export declare function dialError(url: string, error: any): string | null;
export type OpenSocket = (url: string, protocols: string[]) => Socket;
/** @typedef {(url: string, protocols: string[]) => Socket} OpenSocket */
/**
 * The receiving end of a stream: iterate it for chunks; credit goes back as you consume
 * them. What it buffers is bounded by the credit granted: the session fails a stream
 * whose sender overruns it.
 */
export declare class Incoming {
    stream: number;
    window: number;
    /** @type {Deferred<DownloadInfo>} */
    info: Deferred<DownloadInfo>;
    /**
     * @param {Connection} conn
     * @param {number} stream
     * @param {number} window the credit granted when the stream was opened
     */
    constructor(conn: Connection, stream: number, window: number);
    /** Whether all the stream's data came (END). */
    get ended(): boolean;
    /**
     * End the stream with `error` (what a reader waiting on it then throws).
     * @param {KilnError} error
     */
    fail(error: KilnError): void;
    /** @returns {AsyncGenerator<Uint8Array, void, void>} */
    [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, void>;
}
/**
 * The sending end of a stream: {@link Outgoing#write} waits for credit, {@link Outgoing#end}
 * finishes it. The stream is over when its request ends: with an error, a writer throws it;
 * with a reply (an exec whose command ended before reading all its input), it is
 * {@link Outgoing#closed} and a writer stops quietly.
 */
export declare class Outgoing {
    stream: number;
    /**
     * Settles with the receiver's first credit (for a connect, the sign that the port
     * answered), or fails with the stream; a request that ended first settles it too.
     * @type {Deferred<void>}
     */
    ready: Deferred<void>;
    /** @param {Connection} conn @param {number} stream */
    constructor(conn: Connection, stream: number);
    /** Whether the request ended with its reply while the stream was open: what is left is not sent. */
    get closed(): boolean;
    /** Why the stream failed, once it has. */
    get error(): import("./errors.js").KilnError | null;
    /**
     * Stop the stream: a writer waiting for credit throws `error`.
     * @param {KilnError} error
     */
    fail(error: KilnError): void;
    /**
     * Send `data` in DATA frames of at most `chunk_bytes`, each within the credit granted,
     * waiting while the socket holds too much unsent data. Throws the stream's error once
     * it failed; returns at once (sending nothing more) once it is {@link Outgoing#closed}.
     * @param {Uint8Array} data
     */
    write(data: Uint8Array): Promise<void>;
    /** All the data is sent (an END frame); no-op once the stream is {@link Outgoing#closed}. */
    end(): void;
    /** Give up the stream (no-op once it is over or the connection is gone). @param {string} reason */
    abort(reason: string): void;
}
/** A live, welcomed connection to the hub. Get one from {@link Connection.open}. */
export declare class Connection {
    socket: Socket;
    session: Session;
    /** @type {(event: SessionEvent) => void} what gets the events the connection has no use for */
    onEvent: (event: SessionEvent) => void;
    /** @type {Deferred<void>} settles when the socket has closed */
    finished: Deferred<void>;
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
    static open(openSocket: OpenSocket, url: string, options: {
        name: string;
        token?: string | null;
        timeoutMs?: number;
        resume?: string | null;
        signal?: AbortSignal;
    }): Promise<Connection>;
    /**
     * @param {Socket} socket
     * @param {Session} session
     * @param {string} [url] the hub's address, for the errors of a failed dial
     */
    constructor(socket: Socket, session: Session, url?: string);
    newId(): number;
    /** Write everything the session has queued, in order. */
    flush(): void;
    /**
     * Send a notification (see `Session#notify`): no reply comes. False, and nothing sent,
     * while more than {@link NOTIFY_BACKLOG_BYTES} wait in the socket's buffer: what
     * notifications say is worth less than slowing what waits. Throws as `Session#notify` does.
     * @param {import("../protocol.js").TaskReport | import("../protocol.js").Usage} message
     * @returns {boolean}
     */
    notify(message: import("../protocol.js").TaskReport | import("../protocol.js").Usage): boolean;
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
    start(message: RequestMessage, onInterim?: OnInterim): Deferred<Message>;
    /**
     * Send a request and wait for its final reply; an `error` reply is thrown as a KilnError.
     * @param {RequestMessage} message
     * @param {OnInterim} [onInterim] what gets its interim replies
     */
    request(message: RequestMessage, onInterim?: OnInterim): Promise<import("../protocol.generated.js").Message>;
    /**
     * Start an upload or a push: its sending end (credit comes from the receiver) and its
     * final reply; `onInterim` gets a push's `want`.
     * @param {RequestMessage} message
     * @param {OnInterim} [onInterim]
     */
    openUpload(message: RequestMessage, onInterim?: OnInterim): {
        sender: Outgoing;
        reply: Deferred<import("../protocol.generated.js").Message>;
    };
    /**
     * Start a download: its receiving end (`info` first, then the chunks) and its final reply.
     * @param {RequestMessage & {window: number}} message
     */
    openDownload(message: RequestMessage & {
        window: number;
    }): {
        receiver: Incoming;
        reply: Deferred<import("../protocol.generated.js").Message>;
    };
    /**
     * Start an exec with `stdin` and/or `stream` (1.2): its sending end for the command's
     * input (credit comes from the provider once the command runs), its receiving end for
     * the command's output (`window` is the first credit), whichever it asked for, and its
     * final reply. Throws at once (nothing sent) if the session refuses it, e.g.
     * UnsupportedVersionError from a hub below 1.2.
     * @param {RequestMessage & {stdin?: boolean | null, stream?: boolean | null, window?: number | null}} message
     */
    openExec(message: RequestMessage & {
        stdin?: boolean | null;
        stream?: boolean | null;
        window?: number | null;
    }): {
        sender: Outgoing | null;
        receiver: Incoming | null;
        reply: Deferred<import("../protocol.generated.js").Message>;
    };
    /**
     * Start a connect (1.7): its sending end toward the container's port (the provider's
     * first credit, {@link Outgoing#ready}, says the port answered), its receiving end for
     * what the service writes (`window` is the first credit), and its final reply (`done`
     * once both ways ended). Throws at once (nothing sent) if the session refuses it, e.g.
     * UnsupportedVersionError from a hub below 1.7.
     * @param {RequestMessage & {window: number}} message
     */
    openConnect(message: RequestMessage & {
        window: number;
    }): {
        sender: Outgoing;
        receiver: Incoming;
        reply: Deferred<import("../protocol.generated.js").Message>;
    };
    /**
     * Ask the hub to stop `request` (no-op once it is over); it still ends with its one reply.
     * @param {number} request
     */
    cancel(request: number): void;
    /** @param {number} stream @param {number} chunks */
    grant(stream: number, chunks: number): void;
    /** End the session from this side (what is open fails with ConnectionClosedError) and close the socket. */
    close(): Promise<void>;
}
