// kiln-client: the Kiln requestor for Node.js and browsers (protocol kiln.v1).

import type { ActivityInfo, DownloadInfo, ProviderInfo, Resources } from "./protocol.js";
import { ActivityError, ConnectionClosedError, KilnError, UsageError } from "./protocol.js";

export type { Message, ActivityInfo, ProviderInfo, Resources, KnownErrorCode } from "./protocol.js";
export { ErrorCode, ERROR_CODES, PROTOCOL_NAME, PROTOCOL_VERSION } from "./protocol.js";

export interface ConnectOptions {
  /** The hub's token, if it wants one. */
  token?: string;
  /** The name this requestor gives the hub (default "requestor"). */
  name?: string;
  /** How long the handshake may take (default 10 s). */
  timeoutMs?: number;
  /**
   * Node only: the CA that signed a wss:// hub's certificate, trusted instead of Node's own
   * CAs: the path of its PEM file (a string, or a file: URL), as Python's `ssl=` takes it; its
   * PEM text (a string holding "-----BEGIN"); or the bytes of its PEM file. A file that
   * cannot be read is a UsageError naming it. A browser verifies the hub with its own trust
   * store and refuses this option.
   */
  ca?: string | URL | Uint8Array;
  /**
   * Dial again when the connection drops (default true): with backoff 0.2 s doubling to
   * 2 s, for up to the `grace` the hub announced (protocol 1.2), resuming the session so
   * that the activities the hub kept go on working. Requests under way when it dropped
   * reject with ConnectionLostError; activities the hub did not keep are marked `lost`.
   */
  reconnect?: boolean;
  /**
   * Node only (a browser ignores it): on SIGINT (Ctrl-C) or SIGTERM, close this requestor —
   * releasing every activity it holds, at once rather than after the hub's grace period —
   * before the process exits with 130 (SIGINT) or 143 (SIGTERM), as Python does (default
   * true). The listeners are added when the first such requestor connects and removed when
   * the last one closes, so a process without an open requestor keeps Node's default
   * behaviour. When the program listens for the signal too, its requestors are still
   * closed, but the process does not exit: the program's listener decides what happens
   * next. A second signal during the release exits at once. `false`: signals are left
   * alone, and what the requestor holds is the program's to release (`close()`).
   */
  releaseOnSignal?: boolean;
}

/**
 * Connect to the hub at `url` as a requestor. Rejects with ConnectionLostError when the
 * hub cannot be reached, does not answer or presents a certificate that is not trusted,
 * UnsupportedVersionError when it speaks another protocol or major version,
 * UnauthorizedError when it refuses the token, UsageError for a URL that is not a hub's
 * (no ws:// or wss://, http://, no host, a bad port: the message says what a hub URL looks
 * like) and for a `ca` that is no PEM certificate or comes with a ws:// url.
 */
export declare function connect(url: string, options?: ConnectOptions): Promise<Requestor>;

export interface DemandOptions {
  /** At least this many CPUs (fractions allowed); default 1. */
  cpus?: number;
  /** Bytes, or e.g. "256MiB"; default 256MiB. */
  memory?: number | string;
  /** Bytes, or e.g. "1GiB"; default 0. */
  storage?: number | string;
  /** Labels the provider must carry exactly. */
  labels?: Record<string, string>;
}

export interface RentOptions {
  image: string;
  demand?: DemandOptions;
  /** Providers (by name) to pass over. */
  exclude?: Iterable<string>;
  /** A name of the caller's: the hub keeps the live activities of one group on distinct providers. */
  group?: string;
  /**
   * `"root"`: the activity's commands run as root (still without capabilities or network),
   * on a provider whose operator allows it (NoMatchError when none does; a hub ≥ 1.2).
   * Default: the image's USER, or nobody.
   */
  user?: "root";
  signal?: AbortSignal;
  /** How far the provider has loaded an image of the hub's store (a hub ≥ 1.1 tells). */
  onProgress?: (progress: RentProgress) => void;
}

/** A provider loads a rent's image from the hub's store: `done` of `total` bytes so far. */
export interface RentProgress {
  provider: string;
  image: string;
  done: number;
  total: number;
}

export interface PushOptions {
  /** Tags to give the image besides those in the archive (its `RepoTags`). */
  tags?: string[];
  /** How far the blobs the hub wants have gone: `done` of `total` bytes. */
  onProgress?: (progress: { done: number; total: number }) => void;
  signal?: AbortSignal;
}

/**
 * An image in the hub's store (the wire's `image_info`, named as the rest of the JS API:
 * `kiln-client/protocol`'s `ImageInfo` is the wire form).
 */
export interface ImageInfo {
  /** Docker's image id: the sha256 of its config (`sha256:…`). */
  digest: string;
  tags: string[];
  /** Bytes of its config and layers. */
  size: number;
  layers: number;
  arch: string;
  os: string;
  /** When it was pushed: the hub's clock, Unix seconds. */
  pushed: number;
  /** When an activity last ran it (Unix seconds); null: never. */
  lastUsed: number | null;
  /** How many activities run it now. */
  inUse: number;
  /** The providers that hold it. */
  providers: string[];
  /** The tenants that pushed it, as far as this requestor may know (a hub ≥ 1.4; else empty). */
  owners: string[];
  /** Whom the holder shares it with: shown to its owner or an admin, else null. */
  shared: string[] | null;
  /** Whether it is shared with every tenant. */
  public: boolean;
}

/** Whom `shareImage` shares an image with (at least one of `with` and `public`). */
export interface ShareOptions {
  /** Tenants: credential names (`kiln token ls`), `#<id>` for an id, `#open` for requestors without a credential. */
  with?: string[];
  /** Share it with every tenant of the hub. */
  public?: boolean;
  /** Take these shares back instead. */
  revoke?: boolean;
}

/** The images in the hub's store, most recently used first, and the bytes it holds (`used`) of its `limit`. */
export interface ImageList {
  images: ImageInfo[];
  used: number;
  limit: number;
}

/** What a push did. */
export interface PushedImage {
  /** Docker's image id: the sha256 of its config. */
  digest: string;
  tags: string[];
  /** Bytes of its config and layers. */
  size: number;
  /** Bytes sent: the blobs the hub lacked. */
  sentBytes: number;
  /** Bytes the hub held already. */
  skippedBytes: number;
  /** The image as the hub's store holds it. */
  image: ImageInfo;
}

/** In Node the path of a `docker save` archive; in a browser a Blob or File of one. */
export type ImageArchiveSource = string | URL | Blob;

/** An amount of capacity; sizes as bytes or e.g. "256MiB". */
export interface ResourcesOptions {
  cpus?: number;
  memory?: number | string;
  storage?: number | string;
}

export interface MarketOptions {
  /** Only providers that hold this image. */
  image?: string;
  /** Only providers carrying all these labels. */
  labels?: Record<string, string>;
  /** Only providers with at least this much capacity free. */
  free?: ResourcesOptions;
  /** At most this many providers (1 to 1000); default 100. */
  limit?: number;
}

export interface ActivitiesOptions {
  /** Every activity at the hub, not only this requestor's (an admin credential's only). */
  all?: boolean;
  /** At most this many activities (1 to 1000, by id); default 1000. */
  limit?: number;
}

export interface TaskContext {
  /** The part's position in the input. */
  index: number;
  /** 1 for the first attempt, 2 for the first retry, ... */
  attempt: number;
  /** Fires when the attempt times out or the job ends: pass it to run, sendFile, ... */
  signal: AbortSignal;
}

/** What a job's worker does with one part on one activity. */
export type Worker<P, R> = (activity: Activity, part: P, context: TaskContext) => Promise<R>;

export interface JobOptions {
  image: string;
  demand?: DemandOptions;
  /** `"root"`: the job's commands run as root, on providers that allow it (as `RentOptions.user`). */
  user?: "root";
  /** Most activities (one per provider) at once; default 4. */
  maxProviders?: number;
  /** More attempts a task gets after its first; default 2. */
  retries?: number;
  /** The most one attempt may take; default no limit. */
  taskTimeoutMs?: number;
  /** How long to wait while no provider takes the job; default 60 s. */
  startTimeoutMs?: number;
  /** Runs once per activity before its first task. */
  setup?: (activity: Activity) => Promise<void>;
  /** Runs once per activity before its release. */
  teardown?: (activity: Activity) => Promise<void>;
  /** A task that fails for good gives its TaskFailedError as its result instead of ending the job. */
  returnExceptions?: boolean;
  /** Called (synchronously: keep it quick) for every event of the job. */
  onEvent?: (event: JobEvent) => void;
  /** Cancels the job; every activity it rented is released. */
  signal?: AbortSignal;
}

export type JobEventKind =
  | "job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done" | "task_retry" | "task_failed"
  | "provider_banned" | "waiting" | "job_done";

/** Something that happened in a job, `elapsed` seconds after it started. */
export interface JobEvent {
  readonly kind: JobEventKind;
  readonly elapsed: number;
  /** The task's index, when the event is about one. */
  readonly task: number | null;
  /** The provider's name, when the event is about one. */
  readonly provider: string | null;
  readonly detail: string;
}

/** The numbers of a job: filled in as it runs, complete once it is done. */
export declare class JobSummary {
  constructor(tasks: number);
  tasks: number;
  succeeded: number;
  failed: number;
  attempts: number;
  retries: number;
  wallSeconds: number;
  /** Tasks each provider finished. */
  tasksPerProvider: Map<string, number>;
  /** CPU time the containers on each provider used. */
  cpuSeconds: Map<string, number>;
  /** Providers the job banned. */
  failedProviders: Set<string>;
  /** One line for the job and one per provider, as Python's `JobSummary.lines()`. */
  lines(): string[];
}

/** What a job needs of a requestor. */
export interface Renter {
  rent(options: Omit<RentOptions, "signal">): Promise<Activity>;
}

/**
 * One split-run-combine job: rents up to `maxProviders` activities (the hub keeps them on
 * distinct providers by the job's `group`), feeds each one task after another, retries
 * and bans as `src/executor.js` describes. Runs once.
 */
export declare class Job<P, R> {
  constructor(requestor: Renter, worker: Worker<P, R>, parts: Iterable<P>, options: JobOptions);
  /** @deprecated The order of earlier releases (a warning once); pass the worker first. */
  constructor(requestor: Renter, parts: Iterable<P>, worker: Worker<P, R>, options: JobOptions);
  /** The name every rent of the job carries (`job-` and 16 hex digits). */
  readonly group: string;
  readonly summary: JobSummary;
  /** How many tasks the job has: null while a generator of parts has not run out. */
  readonly total: number | null;
  /** Attempts running now. */
  readonly running: number;
  /** Call `listener` for every event; returns what stops the calls. */
  subscribe(listener: (event: JobEvent) => void): () => void;
  /** The events as they happen, until `job_done` (call before running; a consumer over 1024 behind loses the oldest). */
  events(): AsyncGenerator<JobEvent, void, void>;
  /** Run the job; the results in input order (with `returnExceptions`, a failed task's TaskFailedError in its place). */
  run(): Promise<R[]>;
  /** Run the job, yielding `[index, result]` as each task finishes; stopping early ends the job. */
  results(): AsyncGenerator<[number, R | TaskFailedError], void, void>;
}

export declare class Requestor {
  /** The activities this requestor holds now. */
  readonly activities: Activity[];
  /** The connection of the moment (a reconnect replaces it); its API is internal. */
  readonly connection: object;
  /** Whether the connection dropped and is being dialled again. */
  readonly reconnecting: boolean;
  /** Why this requestor has no connection for good (closed, or no reconnect in time); null while it has. */
  readonly gone: ConnectionClosedError | null;
  /** Wait out a reconnect: true when the connection is back, false when it is gone for good. */
  reconnected(): Promise<boolean>;
  /** Rent a container; release it with `activity.release()` or `requestor.close()`. */
  rent(options: RentOptions): Promise<Activity>;
  /** The providers the hub knows (their offer, what is free, the images they hold), by name, filtered. */
  market(options?: MarketOptions): Promise<ProviderInfo[]>;
  /**
   * The activities this requestor holds at the hub, by id (a hub ≥ 1.3). With `all: true`,
   * every activity at the hub: only for a requestor that joined with an admin credential,
   * else UnauthorizedError. Listing another's activity lets no one touch it.
   */
  listActivities(options?: ActivitiesOptions): Promise<ActivityInfo[]>;
  /**
   * Push the image in a `docker save` archive to the hub's store (only the blobs it lacks
   * are sent, streamed); then rent it by tag or digest. ImageError for an archive that is
   * not one image's (before anything is sent), ImageCorruptError, StoreFullError;
   * UnsupportedVersionError from a hub of protocol 1.0.
   */
  pushImage(local: ImageArchiveSource, options?: PushOptions): Promise<PushedImage>;
  /** The images in the hub's store this requestor may see (its own, those shared with it), most recently used first. */
  listImages(): Promise<ImageList>;
  /** Remove an image this requestor pushed (by tag or digest) from the hub's store; ImageNotFoundError if it cannot see it. */
  removeImage(ref: string): Promise<void>;
  /**
   * Share an image this requestor pushed with other tenants (`with`) or everyone (`public`),
   * or take shares back (`revoke`); a hub ≥ 1.4. ImageNotFoundError for an image it cannot
   * see, UnauthorizedError for one it did not push.
   */
  shareImage(ref: string, options: ShareOptions): Promise<void>;
  /** A job not started yet: follow its events, then run it. The parts are read as slots free up. */
  job<P, R>(worker: Worker<P, R>, parts: Iterable<P>, options: JobOptions): Job<P, R>;
  /** @deprecated The order of earlier releases (a warning once); pass the worker first. */
  job<P, R>(parts: Iterable<P>, worker: Worker<P, R>, options: JobOptions): Job<P, R>;
  /** Run `worker` for every part on rented activities; the results in input order. */
  map<P, R>(worker: Worker<P, R>, parts: Iterable<P>, options: JobOptions): Promise<R[]>;
  /** @deprecated The order of earlier releases (a warning once); pass the worker first. */
  map<P, R>(parts: Iterable<P>, worker: Worker<P, R>, options: JobOptions): Promise<R[]>;
  /** Like `map`, but yield `[index, result]` as each task finishes. */
  mapUnordered<P, R>(
    worker: Worker<P, R>,
    parts: Iterable<P>,
    options: JobOptions,
  ): AsyncGenerator<[number, R | TaskFailedError], void, void>;
  /** @deprecated The order of earlier releases (a warning once); pass the worker first. */
  mapUnordered<P, R>(
    parts: Iterable<P>,
    worker: Worker<P, R>,
    options: JobOptions,
  ): AsyncGenerator<[number, R | TaskFailedError], void, void>;
  /** Release every activity still held and close the connection, for good (no reconnect; a reconnect under way is given up). */
  close(): Promise<void>;
}

export interface SignalOption {
  signal?: AbortSignal;
}

/**
 * A command's input (a hub ≥ 1.2): bytes, text (sent as UTF-8), a local file (what
 * `sendFile` takes: a path in Node, a Blob or File in a browser), or chunks of bytes.
 */
export type Stdin =
  | Uint8Array
  | string
  | { file: LocalSource }
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>;

export interface RunOptions extends SignalOption {
  env?: Record<string, string>;
  workdir?: string;
  /** Kill the command after this long: the run then rejects with CommandTimeoutError. */
  timeoutMs?: number;
  /**
   * The command's input, streamed within the provider's credit, then EOF (a hub ≥ 1.2;
   * UnsupportedVersionError from an older one). Default: empty input.
   */
  stdin?: Stdin;
}

export interface RunCheckOptions extends RunOptions {
  /**
   * Reject with CommandFailedError (its `result` the Result) when the command exits with a
   * code other than 0, instead of resolving to that Result (default false).
   */
  check?: boolean;
}

/** Output of a streamed command as it comes: `text` is `data` decoded as UTF-8 (a character split between chunks is decoded whole in the later one). */
export interface OutputChunk {
  readonly kind: "stdout" | "stderr";
  readonly data: Uint8Array;
  readonly text: string;
}

/** The end of a streamed command, always the last event: its Result (stdout and stderr empty: they came as events). */
export interface ExitEvent {
  readonly kind: "exit";
  readonly result: Result;
}

export type OutputEvent = OutputChunk | ExitEvent;

/** In Node a local path; in a browser a Blob or File. */
export type LocalSource = string | URL | Blob;
/** In Node a local path; in a browser a WritableStream. */
export type LocalDestination = string | URL | WritableStream<Uint8Array>;

export declare class Activity {
  readonly id: string;
  /** The provider's name. */
  readonly provider: string;
  readonly resources: Resources;
  /** Bytes its commands may write: the storage it rented, or 256 MiB when the rent named none. */
  readonly storage: number;
  /** Whether the provider already held the image. */
  readonly cached: boolean;
  /** Bytes of the image the provider loaded from the hub's store for it (null: the hub did not say). */
  readonly pulled: number | null;
  /** Why the activity is gone, once it is. */
  lost: KilnError | null;
  released: boolean;
  /** CPU time the container used, known once released. */
  cpuSeconds: number | null;
  sendBytes(data: Uint8Array | string, path: string, options?: SignalOption & { mode?: number }): Promise<void>;
  sendJson(value: unknown, path: string, options?: SignalOption): Promise<void>;
  /** Node: streamed from disk. Browser: a Blob or File. */
  sendFile(local: LocalSource, path: string, options?: SignalOption & { mode?: number }): Promise<void>;
  /**
   * Run `argv` exactly as given; a Result whatever the exit code (with `check`, a code
   * other than 0 rejects with CommandFailedError). CommandTimeoutError past `timeoutMs`.
   */
  run(argv: string[], options?: RunCheckOptions): Promise<Result>;
  /**
   * Run `argv` and yield its output as it comes, then its exit (a hub ≥ 1.2). Credit goes
   * back as events are taken: a consumer that stops reading stops the command. Leaving
   * the loop early or `signal` firing kills the command. Throws CommandTimeoutError
   * instead of the exit past `timeoutMs`; RemoteProtocolError `bad_frame` for output
   * that is neither stdout nor stderr, or empty.
   */
  stream(argv: string[], options?: RunOptions): AsyncGenerator<OutputEvent, void, void>;
  /** A file's content; a DownloadTooLargeError past `maxBytes` (default 256 MiB). */
  downloadBytes(path: string, options?: SignalOption & { maxBytes?: number }): Promise<Uint8Array>;
  /** A file's content as JSON; a DownloadTooLargeError past `maxBytes` (default 64 MiB). */
  downloadJson<T = unknown>(path: string, options?: SignalOption & { maxBytes?: number }): Promise<T>;
  /**
   * Node: streamed to disk (a folder is extracted into `dest`, and a crafted archive is a
   * TransferFailedError); resolves to the absolute path. A file must be the size its
   * provider announced (else TransferFailedError). `maxBytes`
   * bounds what is taken, a folder's archive included (a DownloadTooLargeError past it); by default
   * what the activity could have written, its `storage` (256 MiB when the rent named none).
   */
  downloadFile(
    path: string,
    dest: LocalDestination,
    options?: SignalOption & { maxBytes?: number },
  ): Promise<string | WritableStream<Uint8Array>>;
  /** Destroy the container and free its capacity. Safe to call twice. */
  release(): Promise<void>;
}

/** What a command did. A non-zero exit code is a result, not an error. */
export declare class Result {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly stdoutBytes: Uint8Array;
  readonly stderrBytes: Uint8Array;
  /** Seconds the command ran. */
  readonly durationS: number;
  readonly timedOut: boolean;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  /** Exit code 0 and no timeout. */
  readonly ok: boolean;
}

/** `path` if it is a valid container path; else throws InvalidPathError. */
export declare function containerPath(path: string): string;
/** Bytes in a size such as "256MiB" or 1024; throws UsageError. */
export declare function parseSize(value: number | string): number;
export declare function demandMessage(demand?: DemandOptions): {
  cpus: number;
  memory: number;
  storage: number;
  labels: Record<string, string>;
};

export {
  KilnError,
  UsageError,
  InvalidPathError,
  ProtocolError,
  LocalProtocolError,
  RemoteProtocolError,
  UnsupportedVersionError,
  ConnectionClosedError,
  ConnectionLostError,
  UnauthorizedError,
  NoMatchError,
  ImageNotFoundError,
  ImageError,
  ImageCorruptError,
  StoreFullError,
  ImageTooLargeError,
  ActivityError,
  ProviderLostError,
  FileNotFoundError,
  TransferFailedError,
  ContainerFailedError,
  CancelledError,
  RemoteError,
  errorFromCode,
} from "./protocol.js";
export type { KilnErrorOptions } from "./protocol.js";

/** A command ran past its timeout and was killed. */
export declare class CommandTimeoutError extends ActivityError {
  constructor(message: string, result: Result);
  /** What the command wrote before it was killed. */
  readonly result: Result;
}
/**
 * A download would take more than its `maxBytes` (code `download_too_large`): by default the
 * storage the activity rented. Nothing of it is kept.
 */
export declare class DownloadTooLargeError extends UsageError {}
/** A command run with `check: true` exited with a code other than 0 (code `command_failed`). */
export declare class CommandFailedError extends ActivityError {
  constructor(message: string, result: Result);
  /** What the command did: its exit code and output. */
  readonly result: Result;
}
/** An attempt of a job's task ran past `taskTimeoutMs` (the task is tried again). */
export declare class TaskTimeoutError extends KilnError {}
/**
 * A job's task failed for good (code `task_failed`): its message names the error that
 * ended it (its name and message), which is its `cause` — the worker's own error, as thrown.
 */
export declare class TaskFailedError extends KilnError {
  constructor(message: string, task: { index: number; item: unknown; attempts: unknown[]; cause?: unknown });
  readonly index: number;
  readonly item: unknown;
  /** Each attempt's error, in order. */
  readonly attempts: unknown[];
  /** The error that ended the task: the worker's own, or the last attempt's. */
  readonly cause: unknown;
}
/** Thrown by a job's worker: run this task again, on another provider if possible. */
export declare class RetryTaskError extends KilnError {}

export type { DownloadInfo };
