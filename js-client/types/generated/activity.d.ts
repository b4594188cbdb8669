/**
 * A rented container: send files in, run commands, get files back (`python/kiln/requestor/activity.py`).
 *
 * An {@link Activity} comes from `requestor.rent()`. Its three actions are `send*`
 * (bytes, a local file, a JSON value), {@link Activity#run} (or {@link Activity#stream},
 * for the output as it comes) and `download*` (bytes, a local file or folder, a JSON
 * value). Files, a command's input and its live output stream in chunks with flow control
 * both ways: nothing holds a whole file in memory except {@link Activity#downloadBytes},
 * which is capped by `maxBytes`. Every method takes an optional `signal` (AbortSignal).
 *
 * (1.7) A port a process of the container listens on is reached with {@link Activity#connect}
 * (one TCP connection; `./ports.js`), {@link Activity#forward} (a local port, Node) and
 * {@link Activity#publish} (an HTTP URL of the hub's, for a browser).
 * @module
 */
import { PortChannel, Publication } from "./ports.js";
export declare const DOWNLOAD_BYTES_LIMIT: number;
export type Source = {
    size: number;
    mode: number;
    chunks: AsyncIterable<Uint8Array>;
    close: () => Promise<void>;
};
export type Files = {
    open: (local: any) => Promise<Source>;
    save: (info: import("../protocol.js").DownloadInfo, chunks: AsyncIterable<Uint8Array>, dest: any, path: string) => Promise<any>;
};
export type LocalSource = string | URL | Blob;
export type LocalDestination = string | URL | WritableStream<Uint8Array>;
export type SignalOption = {
    signal?: AbortSignal;
};
export type Stdin = Uint8Array | string | {
    file: LocalSource;
} | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
export type RunOptions = {
    env?: Record<string, string>;
    workdir?: string;
    /**
     * kill the command after this long: the run then rejects with CommandTimeoutError
     */
    timeoutMs?: number;
    signal?: AbortSignal;
    /**
     * the command's input, streamed within the provider's credit, then EOF (a hub ≥ 1.2;
     * UnsupportedVersionError from an older one); default: empty input
     */
    stdin?: Stdin;
};
export type RunCheckOptions = RunOptions & {
    check?: boolean;
};
export type OutputChunk = Readonly<{
    kind: "stdout" | "stderr";
    data: Uint8Array;
    text: string;
}>;
export type ExitEvent = Readonly<{
    kind: "exit";
    result: Result;
}>;
export type OutputEvent = OutputChunk | ExitEvent;
/** What a command did. A non-zero `exitCode` is a result, not an error. */
export declare class Result {
    /** @type {number} */
    exitCode: number;
    stdoutBytes: Uint8Array<ArrayBuffer>;
    stderrBytes: Uint8Array<ArrayBuffer>;
    /** stdout decoded as UTF-8 (bad bytes replaced) */
    stdout: string;
    stderr: string;
    /** @type {number} seconds the command ran */
    durationS: number;
    /** @type {boolean} */
    timedOut: boolean;
    /** @type {boolean} true when stdout was cut at the hub's `max_output_bytes` */
    stdoutTruncated: boolean;
    stderrTruncated: boolean;
    /**
     * @param {import("../protocol.js").ExecResult} reply
     */
    constructor(reply: import("../protocol.js").ExecResult);
    /** Exit code 0 and no timeout. */
    get ok(): boolean;
}
/**
 * `path` if it is a valid container path, else {@link InvalidPathError} (nothing is sent).
 * @param {unknown} path
 * @returns {string}
 */
export declare function containerPath(path: unknown): string;
export type Link = {
};
/**
 * Where an activity's requests go: its requestor's connection of the moment.
 * @typedef {object} Link
 * @property {() => Promise<import("./connection.js").Connection>} _connected the connection to use now
 *   (waiting out a reconnect); rejects with ConnectionLostError once there is none for good
 */
/** One container rented on one provider, until {@link Activity#release} (or its provider is lost). */
export declare class Activity {
    /** @type {string} */
    id: string;
    /** @type {string} the provider's name */
    provider: string;
    /** @type {import("../protocol.js").Resources} */
    resources: import("../protocol.js").Resources;
    /** @type {boolean} whether the provider already held the image */
    cached: boolean;
    /** @type {number | null} bytes of the image the provider loaded from the hub's store for it (null: the hub did not say) */
    pulled: number | null;
    /** @type {import("./errors.js").KilnError | null} why the activity is gone, once it is */
    lost: import("./errors.js").KilnError | null;
    released: boolean;
    /** @type {number | null} CPU time the container used, known once released */
    cpuSeconds: number | null;
    /** @type {import("../protocol.js").Price | null} (1.5) the provider's price in micro-credits (null: free, or an older hub) */
    price: import("../protocol.js").Price | null;
    /** @type {number | null} (1.5) micro-credits the hub holds of the requestor's for it (null: nothing held) */
    hold: number | null;
    /** @type {import("./requestor.js").CostInfo | null} (1.5) what it owes so far, as the hub last captured it */
    cost: import("./requestor.js").CostInfo | null;
    /** bytes sent to it and taken from it so far: uploads, downloads and commands' output */
    moved: number;
    /**
     * @param {Link} link a Connection, or a requestor that reconnects (then its activities outlive a connection)
     * @param {import("../protocol.js").Rented} rented
     * @param {Files} files
     * @param {(activity: Activity) => void} onRelease
     * @param {import("./ports.js").Ports} [ports] how the platform presents a connection (default: a PortSocket)
     */
    constructor(link: Link, rented: import("../protocol.js").Rented, files: Files, onRelease: (activity: Activity) => void, ports?: import("./ports.js").Ports);
    /**
     * Bytes its commands may write (`/golem` and `/tmp`): the storage it rented, or the default
     * a rent that named none is given; what {@link Activity#downloadFile} takes at most by default.
     * @returns {number}
     */
    get storage(): number;
    toString(): string;
    /**
     * Write `data` to the file `path` in the container (parent folders are made).
     * @param {Uint8Array | string} data bytes, or a string written as UTF-8
     * @param {string} path
     * @param {SignalOption & {mode?: number}} [options]
     */
    sendBytes(data: Uint8Array | string, path: string, options?: SignalOption & {
        mode?: number;
    }): Promise<void>;
    /**
     * Write `value` as JSON to `path` in the container.
     * @param {unknown} value
     * @param {string} path
     * @param {SignalOption} [options]
     */
    sendJson(value: unknown, path: string, options?: SignalOption): Promise<void>;
    /**
     * Stream a local file to `path` in the container. In Node `local` is a file path
     * (read in chunks, never whole); in a browser it is a Blob or File.
     * @param {LocalSource} local
     * @param {string} path
     * @param {SignalOption & {mode?: number}} [options]
     */
    sendFile(local: LocalSource, path: string, options?: SignalOption & {
        mode?: number;
    }): Promise<void>;
    /**
     * Run `argv` exactly as given (use `["sh", "-c", "..."]` for a shell).
     *
     * Resolves to a {@link Result} whatever the exit code, unless `check` is true: then an
     * exit code other than 0 rejects with a {@link CommandFailedError} (its `result` the
     * Result). Rejects with {@link CommandTimeoutError} (its `result` holds the output so far) when `timeoutMs`
     * passes first (the command is killed), or a CancelledError when `signal` fires (the
     * command is cancelled on the provider).
     *
     * `stdin` feeds the command's input (a hub of protocol 1.2: UnsupportedVersionError
     * from an older one, before anything is sent): bytes, a string (UTF-8), `{file: local}`
     * (what `sendFile` takes), or an (async) iterable of byte chunks. It streams within the
     * provider's credit, so a command that reads slowly slows the sending; then the input
     * ends (EOF). A command that ends before it read it all gets no more of it. A source
     * that throws or yields something other than bytes kills the command, and the run
     * rejects with that error. Without `stdin` the command's input is empty.
     * @param {string[]} argv
     * @param {RunCheckOptions} [options]
     * @returns {Promise<Result>}
     */
    run(argv: string[], options?: RunCheckOptions): Promise<Result>;
    /**
     * Run `argv` and yield its output as it comes: `{kind: "stdout" | "stderr", data, text}`
     * in the order the command wrote it, then `{kind: "exit", result}` last (a
     * {@link Result} as `run` gives, its stdout and stderr empty). Needs a hub of protocol
     * 1.2 (UnsupportedVersionError from an older one, before anything is sent).
     *
     * The command starts when the iteration does. Credit goes back to the provider as
     * events are taken, so a consumer that stops reading stops the command at its next
     * write: nothing buffers without bound. Leaving the loop early (`break`, `return`, a
     * throw) or `signal` firing cancels the command (it is killed); the signal makes the
     * loop throw a CancelledError. Throws {@link CommandTimeoutError} instead of the exit
     * when `timeoutMs` passes (the output came as events already), and RemoteProtocolError
     * `bad_frame` when the hub sends output that is not tagged stdout or stderr, or empty.
     * `stdin` works as for {@link Activity#run}.
     * @param {string[]} argv
     * @param {RunOptions} [options]
     * @returns {AsyncGenerator<OutputEvent, void, void>}
     */
    stream(argv: string[], options?: RunOptions): AsyncGenerator<OutputEvent, void, void>;
    /**
     * The content of the file `path`; a DownloadTooLargeError if it is over `maxBytes` (default 256 MiB).
     * @param {string} path
     * @param {SignalOption & {maxBytes?: number}} [options]
     * @returns {Promise<Uint8Array>}
     */
    downloadBytes(path: string, options?: SignalOption & {
        maxBytes?: number;
    }): Promise<Uint8Array>;
    /**
     * The JSON value in the file `path`; a DownloadTooLargeError past `maxBytes` (default 64 MiB).
     * @template [T=unknown]
     * @param {string} path
     * @param {SignalOption & {maxBytes?: number}} [options]
     * @returns {Promise<T>}
     */
    downloadJson<T = unknown>(path: string, options?: SignalOption & {
        maxBytes?: number;
    }): Promise<T>;
    /**
     * Stream the file or folder `path` to `dest` and resolve to `dest`.
     *
     * In Node `dest` is a local path: a file is written there (through a temporary file,
     * so a failed transfer leaves nothing half-written); a folder's contents are extracted
     * into the folder `dest` as they arrive, and no entry can land outside it (absolute
     * names, `..` and links out are refused with a TransferFailedError, as is an archive
     * that cannot be extracted as it stands). In a browser `dest` is a
     * WritableStream that receives the file's bytes (a folder comes as a tar stream).
     * A file must be the size its provider announced (else TransferFailedError).
     *
     * `maxBytes` bounds what is taken, a folder's archive included: by default what the
     * activity could have written, the storage it rented (256 MiB when it named none), so a
     * provider cannot fill the local disk with more. Past it the download stops with a
     * DownloadTooLargeError; pass a larger `maxBytes` to take more (or a smaller one).
     * @param {string} path
     * @param {LocalDestination} dest
     * @param {SignalOption & {maxBytes?: number}} [options]
     * @returns {Promise<string | WritableStream<Uint8Array>>} Node: the absolute path written; a browser: `dest`
     */
    downloadFile(path: string, dest: LocalDestination, options?: SignalOption & {
        maxBytes?: number;
    }): Promise<string | WritableStream<Uint8Array>>;
    /**
     * Open a TCP connection to `127.0.0.1:port` inside the container (its own loopback, which
     * exists though it has no network), carried through the hub with flow control both ways.
     * Resolves once the port answered: in Node to a `stream.Duplex` (writes wait for credit,
     * `end()` half-closes, `'end'` when the service closed its side, `destroy(err)` resets), in
     * a browser to a {@link import("./ports.js").PortSocket} (a WebSocket's surface, plus
     * `read()`/`write()` promises).
     *
     * Rejects with ConnectionRefusedError when nothing listens there, UnsupportedVersionError
     * from a hub below 1.7 (before anything is sent), UsageError for a port outside 1-65535,
     * and CancelledError when `signal` fires first.
     * @param {number} port
     * @param {import("./ports.js").PortOptions} [options]
     * @returns {Promise<import("./ports.js").PortStream>}
     */
    connect(port: number, options?: import("./ports.js").PortOptions): Promise<import("./ports.js").PortStream>;
    /**
     * Listen on a local port (`localPort`, default 0: any free one; `host`, default
     * 127.0.0.1) and carry each connection accepted to `port` in the container, each over a
     * connect of its own with its own credit. Resolves once listening to `{port, host,
     * close()}`. Node only (a UsageError in a browser, which cannot listen).
     * @param {number} port
     * @param {import("./ports.js").ForwardOptions} [options]
     * @returns {Promise<import("./ports.js").Forward>}
     */
    forward(port: number, options?: import("./ports.js").ForwardOptions): Promise<import("./ports.js").Forward>;
    /**
     * Ask the hub to serve `port` as HTTP at an unguessable URL of its own (`…/s/<token>/`),
     * for a browser: every request under it goes to the port, the prefix removed. Resolves to
     * a {@link Publication} (`url`, `token`, `revoke()`); the URL serves until it is revoked
     * or the activity ends. Anyone who knows the URL reaches the port: keep it as a secret.
     * UnsupportedVersionError from a hub below 1.7.
     * @param {number} port
     * @param {SignalOption} [options]
     * @returns {Promise<Publication>}
     */
    publish(port: number, options?: SignalOption): Promise<Publication>;
    /**
     * The published URL of `token` serves nothing from now on (404), and the connections it
     * carries close. Rejects with an ActivityError (`not_published`) for a token that is not
     * one of this requestor's publications.
     * @param {string} token
     */
    unpublish(token: string): Promise<void>;
    /** Destroy the container and free its capacity. Safe to call twice. */
    release(): Promise<void>;
}
export type Feed = {
    error: unknown;
};
