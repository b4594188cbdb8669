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

import {
  CommandFailedError,
  CommandTimeoutError,
  DownloadTooLargeError,
  FileNotFoundError,
  InvalidPathError,
  ProviderLostError,
  RemoteProtocolError,
  TransferFailedError,
  UsageError,
} from "./errors.js";
import { raceAbort, throwIfAborted, cancelledBy } from "./deferred.js";
import { ErrorCode } from "./protocol/generated/constants.js";
import { DEFAULT_STORAGE, OUTPUT_WINDOW } from "./protocol/generated/limits.js";
import { MAX_PATH_LENGTH, pathProblem } from "./protocol/paths.js";
import { PortChannel, Publication, SOCKET_PORTS, checkPort } from "./ports.js";

export const DOWNLOAD_BYTES_LIMIT = 256 * 1024 * 1024;

/**
 * A file coming from the requestor's side: its size, mode, and its content in chunks.
 * @typedef {object} Source
 * @property {number} size
 * @property {number} mode
 * @property {AsyncIterable<Uint8Array>} chunks
 * @property {() => Promise<void>} close
 */

/**
 * How a platform reads local files and writes downloads (Node: the disk; browser: Blobs
 * and WritableStreams).
 * @typedef {object} Files
 * @property {(local: any) => Promise<Source>} open
 * @property {(info: import("../types/protocol.js").DownloadInfo, chunks: AsyncIterable<Uint8Array>, dest: any, path: string) => Promise<any>} save
 */

/** In Node a local path; in a browser a Blob or File. @typedef {string | URL | Blob} LocalSource */
/** In Node a local path; in a browser a WritableStream. @typedef {string | URL | WritableStream<Uint8Array>} LocalDestination */
/** @typedef {{signal?: AbortSignal}} SignalOption */

/**
 * A command's input (a hub ≥ 1.2): bytes, text (sent as UTF-8), a local file (`{file}`: what
 * `sendFile` takes), or chunks of bytes.
 * @typedef {Uint8Array | string | {file: LocalSource} | AsyncIterable<Uint8Array> | Iterable<Uint8Array>} Stdin
 */

/**
 * The options of {@link Activity#run} and {@link Activity#stream}.
 * @typedef {object} RunOptions
 * @property {Record<string, string>} [env]
 * @property {string} [workdir]
 * @property {number} [timeoutMs] kill the command after this long: the run then rejects with CommandTimeoutError
 * @property {AbortSignal} [signal]
 * @property {Stdin} [stdin] the command's input, streamed within the provider's credit, then EOF (a hub ≥ 1.2;
 *   UnsupportedVersionError from an older one); default: empty input
 */

/**
 * The options of {@link Activity#run}: `check` rejects with CommandFailedError (its `result`
 * the Result) when the command exits with a code other than 0, instead of resolving to that
 * Result (default false).
 * @typedef {RunOptions & {check?: boolean}} RunCheckOptions
 */

/**
 * Output of a streamed command as it comes: `text` is `data` decoded as UTF-8 (a character
 * split between chunks is decoded whole in the later one).
 * @typedef {Readonly<{kind: "stdout" | "stderr", data: Uint8Array, text: string}>} OutputChunk
 */
/**
 * The end of a streamed command, always the last event: its Result (stdout and stderr
 * empty: they came as events).
 * @typedef {Readonly<{kind: "exit", result: Result}>} ExitEvent
 */
/** What {@link Activity#stream} yields: output as it comes, then the command's exit, last. @typedef {OutputChunk | ExitEvent} OutputEvent */

/** The tag of an output DATA frame: its first byte. */
const OUTPUT_KINDS = /** @type {const} */ ([null, "stdout", "stderr"]);

/** What a command did. A non-zero `exitCode` is a result, not an error. */
export class Result {
  /**
   * @param {import("../types/protocol.js").ExecResult} reply
   */
  constructor(reply) {
    /** @type {number} */
    this.exitCode = reply.exit_code;
    this.stdoutBytes = fromBase64(reply.stdout);
    this.stderrBytes = fromBase64(reply.stderr);
    /** stdout decoded as UTF-8 (bad bytes replaced) */
    this.stdout = new TextDecoder().decode(this.stdoutBytes);
    this.stderr = new TextDecoder().decode(this.stderrBytes);
    /** @type {number} seconds the command ran */
    this.durationS = reply.duration;
    /** @type {boolean} */
    this.timedOut = reply.timed_out;
    /** @type {boolean} true when stdout was cut at the hub's `max_output_bytes` */
    this.stdoutTruncated = reply.stdout_truncated;
    this.stderrTruncated = reply.stderr_truncated;
  }

  /** Exit code 0 and no timeout. */
  get ok() {
    return this.exitCode === 0 && !this.timedOut;
  }
}

/** @param {string} text */
function fromBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/**
 * `path` if it is a valid container path, else {@link InvalidPathError} (nothing is sent).
 * @param {unknown} path
 * @returns {string}
 */
export function containerPath(path) {
  if (typeof path !== "string") throw new InvalidPathError(`a container path must be a string, not ${typeof path}`);
  const why = pathProblem(path);
  if (why !== null) throw new InvalidPathError(why);
  if (path.length > MAX_PATH_LENGTH) {
    throw new InvalidPathError(`container path is longer than ${MAX_PATH_LENGTH} characters`);
  }
  return path;
}

/**
 * Where an activity's requests go: its requestor's connection of the moment.
 * @typedef {object} Link
 * @property {() => Promise<import("./connection.js").Connection>} _connected the connection to use now
 *   (waiting out a reconnect); rejects with ConnectionLostError once there is none for good
 */

/** One container rented on one provider, until {@link Activity#release} (or its provider is lost). */
export class Activity {
  /**
   * @param {Link} link a Connection, or a requestor that reconnects (then its activities outlive a connection)
   * @param {import("../types/protocol.js").Rented} rented
   * @param {Files} files
   * @param {(activity: Activity) => void} onRelease
   * @param {import("./ports.js").Ports} [ports] how the platform presents a connection (default: a PortSocket)
   */
  constructor(link, rented, files, onRelease, ports = SOCKET_PORTS) {
    this._link = link;
    this._files = files;
    this._ports = ports;
    this._onRelease = onRelease;
    /** @type {string} */
    this.id = rented.activity;
    /** @type {string} the provider's name */
    this.provider = rented.provider;
    /** @type {import("../types/protocol.js").Resources} */
    this.resources = rented.resources;
    /** @type {boolean} whether the provider already held the image */
    this.cached = rented.cached;
    /** @type {number | null} bytes of the image the provider loaded from the hub's store for it (null: the hub did not say) */
    this.pulled = rented.pulled ?? null;
    /** @type {import("./errors.js").KilnError | null} why the activity is gone, once it is */
    this.lost = null;
    this.released = false;
    /** @type {number | null} CPU time the container used, known once released */
    this.cpuSeconds = null;
    /** @type {import("../types/protocol.js").Price | null} (1.5) the provider's price in micro-credits (null: free, or an older hub) */
    this.price = rented.price ?? null;
    /** @type {number | null} (1.5) micro-credits the hub holds of the requestor's for it (null: nothing held) */
    this.hold = rented.hold ?? null;
    /** @type {import("./requestor.js").CostInfo | null} (1.5) what it owes so far, as the hub last captured it */
    this.cost = null;
    /** bytes sent to it and taken from it so far: uploads, downloads and commands' output */
    this.moved = 0;
  }

  /**
   * Bytes its commands may write (`/golem` and `/tmp`): the storage it rented, or the default
   * a rent that named none is given; what {@link Activity#downloadFile} takes at most by default.
   * @returns {number}
   */
  get storage() {
    return this.resources.storage || DEFAULT_STORAGE;
  }

  toString() {
    return `Activity ${this.id} on ${this.provider}`;
  }

  /**
   * The requestor's connection of the moment (waiting out a reconnect: ConnectionLostError
   * when none came back), once this activity is still there.
   */
  async _connection() {
    const conn = await this._link._connected();
    this._check();
    return conn;
  }

  _check() {
    if (this.lost !== null) {
      throw new ProviderLostError(`activity ${this.id} is gone: ${this.lost.message}`, { code: this.lost.code });
    }
    if (this.released) throw new UsageError(`activity ${this.id} was released`);
  }

  // --- send -------------------------------------------------------------------------

  /**
   * Write `data` to the file `path` in the container (parent folders are made).
   * @param {Uint8Array | string} data bytes, or a string written as UTF-8
   * @param {string} path
   * @param {SignalOption & {mode?: number}} [options]
   */
  async sendBytes(data, path, options = {}) {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    if (!(bytes instanceof Uint8Array)) throw new UsageError("sendBytes takes a Uint8Array or a string");
    await this._upload(path, bytes.byteLength, options.mode ?? 0o644, [bytes], options.signal);
  }

  /**
   * Write `value` as JSON to `path` in the container.
   * @param {unknown} value
   * @param {string} path
   * @param {SignalOption} [options]
   */
  async sendJson(value, path, options = {}) {
    await this.sendBytes(JSON.stringify(value), path, options);
  }

  /**
   * Stream a local file to `path` in the container. In Node `local` is a file path
   * (read in chunks, never whole); in a browser it is a Blob or File.
   * @param {LocalSource} local
   * @param {string} path
   * @param {SignalOption & {mode?: number}} [options]
   */
  async sendFile(local, path, options = {}) {
    const target = containerPath(path);
    await this._connection();
    const source = await this._files.open(local);
    try {
      await this._upload(target, source.size, options.mode ?? source.mode, source.chunks, options.signal);
    } finally {
      await source.close();
    }
  }

  /**
   * @param {string} path
   * @param {number} size
   * @param {number} mode
   * @param {Iterable<Uint8Array> | AsyncIterable<Uint8Array>} chunks
   * @param {AbortSignal | undefined} signal
   */
  async _upload(path, size, mode, chunks, signal) {
    const target = containerPath(path);
    throwIfAborted(signal, `upload of ${target}`);
    const conn = await this._connection();
    const message = { type: "upload", id: conn.newId(), activity: this.id, path: target, size, mode };
    const { sender, reply } = conn.openUpload(message);
    const onAbort = () => sender.fail(cancelledBy(/** @type {AbortSignal} */ (signal), `upload of ${target}`));
    signal?.addEventListener("abort", onAbort, { once: true });
    let sent = 0;
    try {
      for await (const chunk of chunks) {
        sent += chunk.byteLength;
        this.moved += chunk.byteLength;
        if (sent > size) throw new UsageError(`${target}: the source grew past the ${size} bytes announced`);
        await sender.write(chunk);
      }
      if (sent !== size) throw new UsageError(`${target}: the source ended after ${sent} of ${size} bytes`);
      sender.end();
      await raceAbort(reply.promise, signal, `upload of ${target}`);
    } catch (e) {
      if (!reply.settled) sender.abort(e instanceof Error ? e.message : String(e));
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  // --- run ---------------------------------------------------------------------------

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
  async run(argv, options = {}) {
    const { conn, message, what } = await this._exec(argv, options, false);
    const { signal } = options;
    const input = options.stdin === undefined ? null : await this._stdin(options.stdin);
    /** @type {Feed} */
    const feed = { error: null };
    let reply;
    try {
      if (input === null) {
        reply = conn.start(message);
      } else {
        const exec = conn.openExec({ ...message, stdin: true });
        reply = exec.reply;
        void feedStdin(/** @type {import("./connection.js").Outgoing} */ (exec.sender), input, feed);
      }
    } catch (e) {
      await input?.close();
      throw e;
    }
    let done;
    try {
      done = /** @type {import("../types/protocol.js").ExecResult} */ (
        await raceAbort(reply.promise, signal, what, () => conn.cancel(message.id))
      );
    } catch (e) {
      throw feed.error ?? e;
    }
    const result = finished(new Result(done), what, options.timeoutMs);
    this.moved += result.stdoutBytes.byteLength + result.stderrBytes.byteLength;
    if (options.check === true && result.exitCode !== 0) throw new CommandFailedError(failureText(what, result), result);
    return result;
  }

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
  async *stream(argv, options = {}) {
    const { conn, message, what } = await this._exec(argv, options, true);
    const { signal } = options;
    const input = options.stdin === undefined ? null : await this._stdin(options.stdin);
    const window = Math.min(OUTPUT_WINDOW, conn.session.limits.max_window);
    /** @type {Feed} */
    const feed = { error: null };
    let exec;
    try {
      exec = conn.openExec({ ...message, stdin: input !== null ? true : null, stream: true, window });
    } catch (e) {
      await input?.close();
      throw e;
    }
    const { sender, reply } = exec;
    const receiver = /** @type {import("./connection.js").Incoming} */ (exec.receiver);
    if (input !== null) void feedStdin(/** @type {import("./connection.js").Outgoing} */ (sender), input, feed);
    const onAbort = () => {
      conn.cancel(message.id);
      receiver.fail(cancelledBy(/** @type {AbortSignal} */ (signal), what));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    let over = false;
    try {
      try {
        for await (const chunk of receiver) {
          throwIfAborted(signal, what);
          const kind = chunk.byteLength > 1 ? OUTPUT_KINDS[chunk[0]] : undefined;
          if (kind === undefined || kind === null) {
            const why = chunk.byteLength > 1 ? `is tagged ${chunk[0]}, not 1 (stdout) or 2 (stderr)` : "carries no output";
            throw new RemoteProtocolError(`an output frame of '${argv[0]}' ${why}`, {
              code: ErrorCode.BAD_FRAME,
              re: message.id,
            });
          }
          const data = chunk.subarray(1);
          this.moved += data.byteLength;
          yield Object.freeze({ kind, data, text: decoders[kind].decode(data, { stream: true }) });
        }
        const done = /** @type {import("../types/protocol.js").ExecResult} */ (
          await raceAbort(reply.promise, signal, what)
        );
        over = true;
        yield Object.freeze({ kind: "exit", result: finished(new Result(done), what, options.timeoutMs) });
      } catch (e) {
        throw feed.error ?? e;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!over && !reply.settled) conn.cancel(message.id);
    }
  }

  /**
   * The `exec` message for `argv` and `options` (checked: UsageError before anything is
   * sent), and how errors name the command.
   * @param {string[]} argv
   * @param {RunOptions} options
   * @param {boolean} streaming whether the output is to stream (stream()) or come whole (run())
   */
  async _exec(argv, options, streaming) {
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === "string")) {
      throw new UsageError('argv must be a non-empty array of strings, e.g. ["sh", "-c", "echo hi"]');
    }
    const workdir = options.workdir !== undefined ? containerPath(options.workdir) : null;
    const { timeoutMs, signal } = options;
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0 && timeoutMs <= 7 * 86400_000)) {
      throw new UsageError(`timeoutMs must be a number of milliseconds in (0, 7 days], not ${timeoutMs}`);
    }
    if (options.stdin !== undefined && !isStdin(options.stdin)) {
      const method = streaming ? "stream" : "run";
      throw new UsageError(`${method}'s stdin takes a Uint8Array, a string, {file: local} or an iterable of Uint8Array`);
    }
    const what = `'${argv[0]}'`;
    throwIfAborted(signal, what);
    const conn = await this._connection();
    throwIfAborted(signal, what);
    const message = {
      type: "exec", id: conn.newId(), activity: this.id, argv: [...argv], env: { ...(options.env ?? {}) },
      workdir, timeout: timeoutMs === undefined ? null : timeoutMs / 1000,
    };
    return { conn, message, what };
  }

  /**
   * A command's input as chunks (a local file opened now, so that a missing one fails
   * before anything is sent).
   * @param {Stdin} stdin
   * @returns {Promise<{chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, close: () => Promise<void>}>}
   */
  async _stdin(stdin) {
    const none = async () => {};
    if (stdin instanceof Uint8Array) return { chunks: [stdin], close: none };
    if (typeof stdin === "string") return { chunks: [new TextEncoder().encode(stdin)], close: none };
    if (isFile(stdin)) return this._files.open(stdin.file);
    return { chunks: /** @type {AsyncIterable<Uint8Array> | Iterable<Uint8Array>} */ (stdin), close: none };
  }

  // --- download ------------------------------------------------------------------------

  /**
   * The info of a download, then its chunks; the stream is cancelled if abandoned.
   *
   * A file's data must be exactly the size its provider announced (TransferFailedError
   * as soon as it passes it, or when it ends short), and no download may pass `maxBytes`
   * (DownloadTooLargeError): nothing a provider says makes this side take more than it asked for.
   * @param {string} path
   * @param {number | null} maxBytes
   * @param {AbortSignal | undefined} signal
   * @returns {AsyncGenerator<import("../types/protocol.js").DownloadInfo | Uint8Array, void, void>}
   */
  async *_download(path, maxBytes, signal) {
    const source = containerPath(path);
    throwIfAborted(signal, `download of ${source}`);
    const conn = await this._connection();
    const window = Math.max(1, Math.floor(conn.session.limits.max_window / 2));
    const message = { type: "download", id: conn.newId(), activity: this.id, path: source, window };
    const { receiver, reply } = conn.openDownload(message);
    const onAbort = () => receiver.fail(cancelledBy(/** @type {AbortSignal} */ (signal), `download of ${source}`));
    signal?.addEventListener("abort", onAbort, { once: true });
    let finished = false;
    try {
      const info = await receiver.info.promise;
      if (maxBytes !== null && info.size !== null && info.size > maxBytes) {
        throw new DownloadTooLargeError(`${source} holds ${info.size} bytes, more than maxBytes=${maxBytes}`);
      }
      const announced = info.kind === "file" ? info.size : null;
      yield info;
      let total = 0;
      for await (const chunk of receiver) {
        total += chunk.byteLength;
        this.moved += chunk.byteLength;
        if (announced !== null && total > announced) {
          throw new TransferFailedError(`${source}: the provider sent more than the ${announced} bytes it announced`);
        }
        if (maxBytes !== null && total > maxBytes) {
          throw new DownloadTooLargeError(`${source} is larger than maxBytes=${maxBytes}`);
        }
        yield chunk;
      }
      if (announced !== null && total !== announced) {
        throw new TransferFailedError(`${source}: the provider sent ${total} of the ${announced} bytes it announced`);
      }
      await raceAbort(reply.promise, signal, `download of ${source}`);
      finished = true;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!finished && !reply.settled) conn.cancel(message.id);
    }
  }

  /**
   * The content of the file `path`; a DownloadTooLargeError if it is over `maxBytes` (default 256 MiB).
   * @param {string} path
   * @param {SignalOption & {maxBytes?: number}} [options]
   * @returns {Promise<Uint8Array>}
   */
  async downloadBytes(path, options = {}) {
    /** @type {Uint8Array[]} */
    const parts = [];
    let total = 0;
    for await (const item of this._download(path, byteBound(options.maxBytes ?? DOWNLOAD_BYTES_LIMIT), options.signal)) {
      if (item instanceof Uint8Array) {
        total += item.byteLength;
        parts.push(item);
      } else {
        requireFile(path, item);
      }
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.byteLength;
    }
    return out;
  }

  /**
   * The JSON value in the file `path`; a DownloadTooLargeError past `maxBytes` (default 64 MiB).
   * @template [T=unknown]
   * @param {string} path
   * @param {SignalOption & {maxBytes?: number}} [options]
   * @returns {Promise<T>}
   */
  async downloadJson(path, options = {}) {
    const data = await this.downloadBytes(path, { maxBytes: 64 * 1024 * 1024, ...options });
    try {
      return JSON.parse(new TextDecoder().decode(data));
    } catch (e) {
      throw new UsageError(`${path} does not hold valid JSON: ${/** @type {Error} */ (e).message}`, { cause: e });
    }
  }

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
  async downloadFile(path, dest, options = {}) {
    const stream = this._download(path, byteBound(options.maxBytes ?? this.storage), options.signal);
    const first = await stream.next();
    if (first.done || first.value instanceof Uint8Array) {
      throw new TransferFailedError(`${path}: the download ended before it began`);
    }
    const info = first.value;
    const chunks = /** @type {AsyncIterable<Uint8Array>} */ ({ [Symbol.asyncIterator]: () => stream });
    try {
      return await this._files.save(info, chunks, dest, path);
    } finally {
      await stream.return(undefined);
    }
  }

  // --- ports (1.7) --------------------------------------------------------------------------

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
  async connect(port, options = {}) {
    return this._ports.wrap(await this._channel(checkPort(port), options.signal));
  }

  /**
   * Listen on a local port (`localPort`, default 0: any free one; `host`, default
   * 127.0.0.1) and carry each connection accepted to `port` in the container, each over a
   * connect of its own with its own credit. Resolves once listening to `{port, host,
   * close()}`. Node only (a UsageError in a browser, which cannot listen).
   * @param {number} port
   * @param {import("./ports.js").ForwardOptions} [options]
   * @returns {Promise<import("./ports.js").Forward>}
   */
  async forward(port, options = {}) {
    const target = checkPort(port);
    const listen = this._ports.forward;
    if (listen === null) throw new UsageError("forward listens on a local port: Node only (in a browser, use connect)");
    this._check();
    return listen(() => this._channel(target, undefined), options);
  }

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
  async publish(port, options = {}) {
    const target = checkPort(port);
    throwIfAborted(options.signal, `publish of port ${target}`);
    const conn = await this._connection();
    const id = conn.newId();
    const reply = conn.start({ type: "publish", id, activity: this.id, port: target });
    const published = /** @type {import("../types/protocol.js").Published} */ (
      await raceAbort(reply.promise, options.signal, `publish of port ${target}`, () => conn.cancel(id))
    );
    return new Publication(published, target, (token) => this.unpublish(token));
  }

  /**
   * The published URL of `token` serves nothing from now on (404), and the connections it
   * carries close. Rejects with an ActivityError (`not_published`) for a token that is not
   * one of this requestor's publications.
   * @param {string} token
   */
  async unpublish(token) {
    if (typeof token !== "string" || token === "") throw new UsageError("unpublish takes the token of a publication");
    const conn = await this._link._connected();
    await conn.request({ type: "unpublish", id: conn.newId(), token });
  }

  /**
   * A connect to `port`, once the port answered (the provider's first credit).
   * @param {number} port
   * @param {AbortSignal | undefined} signal
   */
  async _channel(port, signal) {
    const what = `connection to port ${port}`;
    throwIfAborted(signal, what);
    const conn = await this._connection();
    const window = Math.min(OUTPUT_WINDOW, conn.session.limits.max_window);
    const message = { type: "connect", id: conn.newId(), activity: this.id, port, window };
    const streams = conn.openConnect(message);
    try {
      await raceAbort(Promise.race([streams.sender.ready.promise, streams.reply.promise]), signal, what, () =>
        conn.cancel(message.id),
      );
    } catch (e) {
      if (!streams.reply.settled) conn.cancel(message.id);
      throw e;
    }
    return new PortChannel(streams, port, (bytes) => {
      this.moved += bytes;
    });
  }

  // --- release ---------------------------------------------------------------------------

  /** Destroy the container and free its capacity. Safe to call twice. */
  async release() {
    if (this.released) return;
    this.released = true;
    this._onRelease(this);
    if (this.lost !== null) return;
    try {
      const conn = await this._link._connected();
      if (this.lost !== null) return; // not kept over a reconnect
      const done = /** @type {import("../types/protocol.js").Done} */ (
        await conn.request({ type: "release", id: conn.newId(), activity: this.id })
      );
      this.cpuSeconds = done.cpu_seconds ?? null;
    } catch (e) {
      // Gone already (provider lost, or the connection is over and the hub destroyed it).
      const code = /** @type {any} */ (e)?.code;
      if (code !== ErrorCode.PROVIDER_LOST && code !== ErrorCode.CONNECTION_CLOSED) throw e;
    }
  }
}

/**
 * How the feeding of a command's input went: `error` is set (before the stream is
 * aborted) when its source failed.
 * @typedef {{error: unknown}} Feed
 */

/**
 * Send `input` to a command's stdin within the credit granted, then END; stop quietly
 * when the command ended first. A source that fails (or yields something other than
 * bytes) aborts the stream, which kills the command; its error goes to `feed.error`.
 * Never rejects: a failure of the exec itself comes with its reply.
 * @param {import("./connection.js").Outgoing} sender
 * @param {{chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, close: () => Promise<void>}} input
 * @param {Feed} feed
 */
async function feedStdin(sender, input, feed) {
  try {
    for await (const chunk of input.chunks) {
      if (!(chunk instanceof Uint8Array)) throw new UsageError(`stdin yielded ${typeof chunk}, not a Uint8Array`);
      await sender.write(chunk);
      if (sender.closed) return;
    }
    sender.end();
  } catch (e) {
    // The exec failed or ended (its reply says why), or the source failed: then the command is killed.
    if (sender.error !== null || sender.closed) return;
    feed.error = e;
    sender.abort(`the command's input failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    await input.close().catch(() => {});
  }
}

/**
 * `result`, unless the command timed out: then a {@link CommandTimeoutError} holding it is thrown.
 * @param {Result} result
 * @param {string} what
 * @param {number | undefined} timeoutMs
 */
function finished(result, what, timeoutMs) {
  if (result.timedOut) {
    throw new CommandTimeoutError(`${what} ran past its timeout of ${timeoutMs} ms and was killed`, result);
  }
  return result;
}

/** The most of a failed command's stderr a CommandFailedError's message shows (its last line). */
const FAILURE_LINE = 200;

/**
 * `'make' exited with code 2: <the last line of its stderr>`.
 * @param {string} what the command, as `'make'`
 * @param {Result} result
 */
function failureText(what, result) {
  const last = result.stderr.trim().split(/\r?\n/).at(-1) ?? "";
  const shown = last.length <= FAILURE_LINE ? last : `${last.slice(0, FAILURE_LINE - 1)}…`;
  return `${what} exited with code ${result.exitCode}${shown ? `: ${shown}` : ""}`;
}

/**
 * @param {unknown} value
 * @returns {value is {file: any}}
 */
const isFile = (value) => typeof value === "object" && value !== null && "file" in value;

/**
 * Whether `value` is something `stdin` takes.
 * @param {unknown} value
 */
function isStdin(value) {
  if (value instanceof Uint8Array || typeof value === "string" || isFile(value)) return true;
  return typeof value === "object" && value !== null && (Symbol.asyncIterator in value || Symbol.iterator in value);
}

/**
 * @param {string} path
 * @param {import("../types/protocol.js").DownloadInfo} info
 */
function requireFile(path, info) {
  if (info.kind !== "file") {
    throw new FileNotFoundError(`${path} is a folder, not a file (use downloadFile for folders)`, {
      code: ErrorCode.NOT_A_FILE,
    });
  }
}

/**
 * `maxBytes` checked: a whole number of bytes, or null for no bound.
 * @param {number | null} maxBytes
 * @returns {number | null}
 */
function byteBound(maxBytes) {
  if (maxBytes !== null && !(Number.isSafeInteger(maxBytes) && maxBytes >= 0)) {
    throw new UsageError(`maxBytes must be a whole number of bytes, not ${maxBytes}`);
  }
  return maxBytes;
}
