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
 * The market (a hub ≥ 1.5): every rent of a job carries its `strategy`, `allow`, `deny`,
 * `minReputation`, `maxDuration` and `budget` (credits, held at the hub for the job's group:
 * never exceeded). When the hub refuses a rent with `budget_exceeded` (or ends an activity
 * for it), the job stops renting; the activities it holds go on taking its tasks (each is
 * covered by its own hold) until the hub ends them or the tasks run out, and once none is
 * held every task not done fails with a TaskFailedError whose cause is the BudgetExceededError;
 * the job then rejects with that BudgetExceededError (with `returnExceptions`, those
 * TaskFailedErrors are the tasks' results and the job resolves). Each `cost` the hub captures
 * for an activity of the job is a `cost` event; the summary's `spent` and `spentByProvider`
 * add them up (credits).
 *
 * Verification (`verify: new Redundant(2)` or `new SpotCheck(0.1)`): tasks run again on
 * other providers and their results are compared, as `scheduling.js` says; for each run
 * that lost, the job tells the hub (`reportVerdict`), which counts it against the provider
 * and pays the requestor back. A losing run's result is never used.
 *
 * Every attempt is recorded ({@link Job#attempts}: its task, provider, activity, times, outcome,
 * reason and bytes moved); {@link Job#reportHtml} and {@link Job#report} draw them as an HTML
 * timeline (`report.js`). A renter with `reportTask` (a requestor whose hub welcomed it at 1.6)
 * hears of each attempt as it starts and as it ends, without the job waiting.
 *
 * The parts are read as slots free up (a generator of a million parts is fine): the job keeps
 * a task while it waits or runs, and nothing of it but counters once it is done. The rules
 * themselves (which task goes where, blame, bans, retries) are the pure `scheduling.js`;
 * this module rents, runs workers, keeps time and waits.
 *
 * Use `requestor.map(worker, parts, options)` / `requestor.mapUnordered(...)`, or make a Job
 * with `requestor.job(worker, parts, options)` to follow its {@link Job#events} and read its
 * {@link Job#summary}. (The order `(parts, worker, options)` still works, with a deprecation
 * warning, for one release.)
 * @module
 */
import { Deferred } from "./deferred.js";
import { BudgetExceededError, NoMatchError, ProviderLostError, TaskFailedError } from "./errors.js";
import { Timeline } from "./report.js";
import { JobSummary, Redundant, Scheduler, SpotCheck } from "./scheduling.js";
export { JobSummary, Redundant, SpotCheck };
export type Activity = import("./activity.js").Activity;
export type Running = {
    started: number;
    task: number;
    attempt: number;
    activity: Activity;
    moved: number;
    open: boolean;
};
export type JobEventKind = import("./scheduling.js").JobEventKind;
export type Task<P> = import("./scheduling.js").Task<P>;
export type Failure<P> = import("./scheduling.js").Failure<P>;
/** @typedef {import("./activity.js").Activity} Activity */
/**
 * An attempt under way: its number in the timeline, and the activity's bytes moved when it began.
 * @typedef {{started: number, task: number, attempt: number, activity: Activity, moved: number, open: boolean}} Running
 */
/** @typedef {import("./scheduling.js").JobEventKind} JobEventKind */
/** @template P @typedef {import("./scheduling.js").Task<P>} Task */
/** @template P @typedef {import("./scheduling.js").Failure<P>} Failure */
/** Events a consumer of {@link Job#events} may fall behind by before it loses the oldest. */
export declare const EVENT_BUFFER = 1024;
/** Results a job holds for {@link Job#results} to take: past this many, no task starts. */
export declare const RESULT_BUFFER = 1024;
export type Renter = {
    rent: (options: import("./requestor.js").RentOptions) => Promise<Activity>;
    /**
     * waits out a reconnect of the requestor's connection:
     * true when it is back, false when it is gone for good (a renter without it never reconnects)
     */
    reconnected?: () => Promise<boolean>;
    /**
     * hears the
     * hub's cost news (a renter without it: no `cost` events, nothing spent in the summary)
     */
    onCost?: (listener: (cost: import("./requestor.js").CostInfo) => void) => () => void;
    /**
     * tells the hub a run lost a
     * verification (a renter without it: the verdicts stay in the job's events)
     */
    reportVerdict?: (lost: string, agreed: string[]) => Promise<void>;
    /**
     * tells the hub (1.6)
     * how an attempt went, without waiting and never throwing (a renter without it: the hub hears nothing)
     */
    reportTask?: (report: import("./requestor.js").TaskReportFields) => void;
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
    /**
     * a `cost` event's capture
     */
    cost?: import("./requestor.js").CostInfo;
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
    /**
     * (1.5) the most the job may spend at the hub, in credits (held there for it)
     */
    budget?: number | string;
    /**
     * (1.5) how the hub picks the job's providers
     */
    strategy?: import("./requestor.js").Strategy;
    /**
     * (1.5) only these providers
     */
    allow?: Iterable<string>;
    /**
     * never these providers
     */
    deny?: Iterable<string>;
    /**
     * (1.5) only providers whose reputation is at least this
     */
    minReputation?: number;
    /**
     * (1.5) seconds each activity may be held (the hub ends it then)
     */
    maxDuration?: number;
    /**
     * run tasks on several providers and compare their results
     */
    verify?: Redundant | SpotCheck;
};
/**
 * The worker and the parts of `map(worker, parts)`, also when called the old way round,
 * `map(parts, worker)` (accepted for one release, with a deprecation warning once).
 * @template P, R
 * @param {Worker<P, R> | Iterable<P>} first
 * @param {Iterable<P> | Worker<P, R>} second
 * @returns {[Worker<P, R>, Iterable<P>]}
 */
export declare function workerAndParts<P, R>(first: Worker<P, R> | Iterable<P>, second: Iterable<P> | Worker<P, R>): [Worker<P, R>, Iterable<P>];
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
    verify: Redundant | SpotCheck | null;
    summary: JobSummary;
    /**
     * @param {Renter} requestor
     * @param {Worker<P, R>} worker
     * @param {Iterable<P>} parts
     * @param {JobOptions} options
     */
    constructor(requestor: Renter, worker: Worker<P, R>, parts: Iterable<P>, options: JobOptions);
    /**
     * The old order, accepted for one release with a deprecation warning.
     * @deprecated call `new Job(requestor, worker, parts, options)`
     * @param {Renter} requestor
     * @param {Iterable<P>} parts
     * @param {Worker<P, R>} worker
     * @param {JobOptions} options
     */
    constructor(requestor: Renter, parts: Iterable<P>, worker: Worker<P, R>, options: JobOptions);
    /** How many tasks the job has: null while a generator of parts has not run out. */
    get total(): number | null;
    /** Attempts running now. */
    get running(): number;
    /**
     * Every attempt of the job's tasks so far, by start (the latest 10,000 that ended, and those
     * running): task, attempt number, provider, activity, start and end (seconds since the job
     * started), outcome, reason, bytes moved. Copies: the job's own record moves on.
     * @returns {import("./report.js").Attempt[]}
     */
    get attempts(): import("./report.js").Attempt[];
    /**
     * The job's report as one self-contained HTML page (see {@link Job#report}): for a browser,
     * which has no file to write it to.
     * @param {string} [title] default `Kiln job <group>`
     * @returns {string}
     */
    reportHtml(title?: string): string;
    /**
     * Write the job's report to the file `path` (made or replaced; Node only: a browser takes
     * {@link Job#reportHtml}); resolves to `path`. One self-contained page (inline CSS and SVG,
     * nothing fetched, every text escaped): a Gantt chart of the attempts on each provider,
     * coloured by outcome (hover a bar for its task, times, bytes and reason), the summary
     * (done, failed, retries, spent, elapsed), and the retries with why.
     * @param {string} path
     * @param {{title?: string}} [options]
     * @returns {Promise<string>}
     */
    report(path: string, { title }?: {
        title?: string;
    }): Promise<string>;
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
