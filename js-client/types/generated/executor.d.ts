/**
 * Split, run, combine: farm a worker over many parts on rented activities (mirrors
 * `python/kiln/requestor/executor.py`, rule for rule).
 *
 * A {@link Job} rents up to `maxProviders` activities, one per provider, and feeds each
 * one task after another (a container per activity, not per task). `setup(act)` runs
 * once per activity before its first task, `teardown(act)` before its release.
 *
 * Placement is the hub's: every rent of a job names the job's group, and the hub keeps a
 * group's activities on distinct providers, so a job costs one round trip per rent
 * however many providers are connected.
 *
 * Failures: an attempt whose provider is lost, that runs past `taskTimeoutMs`, or whose
 * worker throws a RetryTaskError is tried again, at most `retries` more times, on another
 * provider when one is available. A lost provider, or one that cannot start the job's
 * containers, is the provider's failure. A failure the worker raises (RetryTaskError, a
 * timeout) is the task's, until the task succeeds on another provider: then it was the
 * provider's. A provider that fails twice in a job gets no more of its tasks. Any other
 * error from the worker, or a task out of attempts, ends the job with a TaskFailedError
 * (or, with `returnExceptions`, that TaskFailedError is the task's result); so does a
 * task no provider is left to run. A job none of whose tasks ever ran ends with a
 * NoMatchError once `startTimeoutMs` has passed. A task cut by a reconnect of the
 * requestor (a ConnectionLostError, then `reconnected()` true) is tried again without
 * counting against its retries; a hub connection lost for good ends the job with the
 * ConnectionClosedError, a fired `signal` with a CancelledError. However the job
 * ends, every activity it rented is released before it settles.
 *
 * What a worker is: any function that returns a promise. JavaScript cannot tell an `async`
 * function from a plain one that returns a promise (`(act, n) => act.run(...)`), and both are
 * fine, so the job refuses a worker (and a `setup` or `teardown`) that is not a function at
 * all, with a UsageError before anything is rented; an attempt whose worker returns
 * something that is not a promise (a thenable) fails its task (a TaskFailedError whose cause
 * is a UsageError saying so, not retried): a worker that did its work synchronously would
 * have held the event loop that carries every other task's messages. A worker's own error
 * is the TaskFailedError's `cause`, its name and message in the TaskFailedError's.
 *
 * JavaScript cannot stop a running function: a timed-out attempt's `context.signal` fires
 * (pass it to `run`, `sendFile`, ...), and an activity whose worker has not settled
 * shortly after is released rather than reused; a job that ends waits a few seconds for
 * its workers, then releases their activities under them.
 *
 * Use `requestor.map()` / `requestor.mapUnordered()`, or make a Job with `requestor.job()`
 * to follow its {@link Job#events} and read its {@link Job#summary}.
 * @module
 */
import { Deferred } from "./deferred.js";
import { NoMatchError, TaskFailedError } from "./errors.js";
export type Activity = import("./activity.js").Activity;
/** @typedef {import("./activity.js").Activity} Activity */
/** Events a consumer of {@link Job#events} may fall behind by before it loses the oldest. */
export declare const EVENT_BUFFER = 1024;
export type Renter = {
    rent: (options: {
        image: string;
        demand?: import("./requestor.js").DemandOptions;
        exclude?: Iterable<string>;
        group?: string;
        user?: "root";
        onProgress?: (progress: {
            provider: string;
            image: string;
            done: number;
            total: number;
        }) => void;
    }) => Promise<Activity>;
    /**
     * waits out a reconnect of the requestor's connection:
     * true when it is back, false when it is gone for good (a renter without it never reconnects)
     */
    reconnected?: () => Promise<boolean>;
};
export type TaskContext = {
    /**
     * the part's position in the input
     */
    index: number;
    /**
     * 1 for the first attempt, 2 for the first retry, ...
     */
    attempt: number;
    /**
     * fires when the attempt times out or the job ends; pass it on
     */
    signal: AbortSignal;
};
export type Worker<P, R> = (activity: Activity, part: P, context: TaskContext) => Promise<R>;
export type JobEventKind = "job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done" | "task_retry" | "task_failed" | "provider_banned" | "waiting" | "job_done";
export type JobEvent = {
    kind: JobEventKind;
    elapsed: number;
    /**
     * the task's index, when the event is about one
     */
    task: number | null;
    /**
     * the provider's name, when the event is about one
     */
    provider: string | null;
    detail: string;
};
export type JobOptions = {
    image: string;
    demand?: import("./requestor.js").DemandOptions;
    /**
     * run the job's commands as root, on providers that allow it
     */
    user?: "root";
    /**
     * most activities (one per provider) at once, default 4
     */
    maxProviders?: number;
    /**
     * more attempts a task gets after its first, default 2
     */
    retries?: number;
    /**
     * the most one attempt may take, default no limit
     */
    taskTimeoutMs?: number;
    /**
     * how long to wait while no provider takes the job, default 60 s
     */
    startTimeoutMs?: number;
    /**
     * runs once per activity before its first task
     */
    setup?: (activity: Activity) => Promise<void>;
    /**
     * runs once per activity before its release
     */
    teardown?: (activity: Activity) => Promise<void>;
    /**
     * a task that fails for good yields its TaskFailedError
     */
    returnExceptions?: boolean;
    /**
     * called (synchronously: keep it quick) for every event
     */
    onEvent?: (event: JobEvent) => void;
    /**
     * cancels the job
     */
    signal?: AbortSignal;
};
export type Task<P> = {
    index: number;
    item: P;
    /**
     * each attempt's error
     */
    errors: unknown[];
    /**
     * providers where it failed
     */
    failedOn: Set<string>;
    /**
     * providers where the worker failed it: to blame if it succeeds elsewhere
     */
    suspects: Set<string>;
};
/**
 * What a job needs of a requestor: `rent`, honouring `exclude` and `group`.
 * @typedef {object} Renter
 * @property {(options: {image: string, demand?: import("./requestor.js").DemandOptions,
 *   exclude?: Iterable<string>, group?: string, user?: "root",
 *   onProgress?: (progress: {provider: string, image: string, done: number, total: number}) => void
 * }) => Promise<Activity>} rent
 * @property {() => Promise<boolean>} [reconnected] waits out a reconnect of the requestor's connection:
 *   true when it is back, false when it is gone for good (a renter without it never reconnects)
 */
/**
 * What a worker gets besides its activity and part.
 * @typedef {object} TaskContext
 * @property {number} index the part's position in the input
 * @property {number} attempt 1 for the first attempt, 2 for the first retry, ...
 * @property {AbortSignal} signal fires when the attempt times out or the job ends; pass it on
 */
/**
 * @template P, R
 * @typedef {(activity: Activity, part: P, context: TaskContext) => Promise<R>} Worker
 */
/**
 * @typedef {"job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done"
 *   | "task_retry" | "task_failed" | "provider_banned" | "waiting" | "job_done"} JobEventKind
 */
/**
 * Something that happened in a job, `elapsed` seconds after it started.
 * @typedef {object} JobEvent
 * @property {JobEventKind} kind
 * @property {number} elapsed
 * @property {number | null} task the task's index, when the event is about one
 * @property {string | null} provider the provider's name, when the event is about one
 * @property {string} detail
 */
/**
 * The options of a job besides its parts and worker.
 * @typedef {object} JobOptions
 * @property {string} image
 * @property {import("./requestor.js").DemandOptions} [demand]
 * @property {"root"} [user] run the job's commands as root, on providers that allow it
 * @property {number} [maxProviders] most activities (one per provider) at once, default 4
 * @property {number} [retries] more attempts a task gets after its first, default 2
 * @property {number} [taskTimeoutMs] the most one attempt may take, default no limit
 * @property {number} [startTimeoutMs] how long to wait while no provider takes the job, default 60 s
 * @property {(activity: Activity) => Promise<void>} [setup] runs once per activity before its first task
 * @property {(activity: Activity) => Promise<void>} [teardown] runs once per activity before its release
 * @property {boolean} [returnExceptions] a task that fails for good yields its TaskFailedError
 * @property {(event: JobEvent) => void} [onEvent] called (synchronously: keep it quick) for every event
 * @property {AbortSignal} [signal] cancels the job
 */
/**
 * @template P
 * @typedef {object} Task
 * @property {number} index
 * @property {P} item
 * @property {unknown[]} errors each attempt's error
 * @property {Set<string>} failedOn providers where it failed
 * @property {Set<string>} suspects providers where the worker failed it: to blame if it succeeds elsewhere
 */
/** The numbers of a job: filled in as it runs, complete once it is done. */
export declare class JobSummary {
    tasks: number;
    succeeded: number;
    failed: number;
    attempts: number;
    retries: number;
    wallSeconds: number;
    /** @type {Map<string, number>} tasks each provider finished */
    tasksPerProvider: Map<string, number>;
    /** @type {Map<string, number>} CPU time the containers on each provider used */
    cpuSeconds: Map<string, number>;
    /** @type {Set<string>} providers the job banned */
    failedProviders: Set<string>;
    /** @param {number} tasks */
    constructor(tasks: number);
    /** The summary as text, one line for the job and one per provider (as Python's `lines()`). */
    lines(): string[];
}
/**
 * One split-run-combine job. Run it once, with {@link Job#run} or {@link Job#results}.
 * @template P, R
 */
export declare class Job<P, R> {
    requestor: Renter;
    worker: Worker<P, R>;
    image: string;
    demand: import("./requestor.js").DemandOptions | undefined;
    user: "root" | undefined;
    maxProviders: number;
    retries: number;
    taskTimeoutMs: number | undefined;
    startTimeoutMs: number;
    setup: ((activity: Activity) => Promise<void>) | undefined;
    teardown: ((activity: Activity) => Promise<void>) | undefined;
    returnExceptions: boolean;
    signal: AbortSignal | undefined;
    /** The hub keeps the job's activities on distinct providers by this name. */
    group: string;
    summary: JobSummary;
    /**
     * @param {Renter} requestor
     * @param {Iterable<P>} parts
     * @param {Worker<P, R>} worker
     * @param {JobOptions} options
     */
    constructor(requestor: Renter, parts: Iterable<P>, worker: Worker<P, R>, options: JobOptions);
    get total(): number;
    /** Attempts running now. */
    get running(): number;
    /**
     * Call `listener` (synchronously, so keep it quick) for every event.
     * @param {(event: JobEvent) => void} listener
     * @returns {() => void} stops the calls
     */
    subscribe(listener: (event: JobEvent) => void): () => void;
    /**
     * The job's events as they happen, until `job_done`. Call it before running the job.
     * Bounded: a consumer more than {@link EVENT_BUFFER} events behind loses the oldest.
     * @returns {AsyncGenerator<JobEvent, void, void>}
     */
    events(): AsyncGenerator<JobEvent, void, void>;
    /**
     * Run the job; the results in input order. With `returnExceptions`, a task that failed
     * for good has its TaskFailedError in its place.
     * @returns {Promise<R[]>}
     */
    run(): Promise<R[]>;
    /**
     * Run the job, yielding `[index, result]` as each task finishes. Stopping the iteration
     * early ends the job (its activities are released before the iteration returns).
     * @returns {AsyncGenerator<[number, R | TaskFailedError], void, void>}
     */
    results(): AsyncGenerator<[number, R | TaskFailedError], void, void>;
    /** Whether the job ended early: no new rents or attempts, and what a worker does no longer counts. */
    get stopped(): boolean;
}
