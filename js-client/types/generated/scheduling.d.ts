/**
 * The executor's rules without I/O: which task goes where, whose fault a failure is, when a
 * provider is banned, when a task is tried again and when it has failed for good. The same
 * rules as `python/kiln/requestor/scheduling.py`, held together by the job vectors of
 * `protocol/v1/vectors/jobs/` that both pass.
 *
 * No clock, no promise, no socket: the executor (`executor.js`) tells the {@link Scheduler}
 * what happened and does what it answers. The rules:
 *
 * - **Tasks** are read from the parts as slots need them (never ahead but one part, to know
 *   whether there is more): a task is kept while it waits or runs, and nothing of it but
 *   counters once it is done or failed.
 * - **Slots** hold one activity each (one per provider). A slot takes a task that waits for a
 *   retry and has not failed on its provider, else a fresh part, else a retry no provider the
 *   job holds has spared.
 * - **Blame**: a lost provider, or one that cannot start the job's containers, is the
 *   provider's failure. A failure the worker raises (`retry`, `timeout`) is the task's, until
 *   the task succeeds on another provider: then it was the provider's (its suspects).
 * - **Bans**: a provider that failed the job twice, or cannot start its containers, gets no
 *   more of its tasks; rents exclude it.
 * - **Retries**: a `retry`, `timeout` or `provider_lost` attempt is tried again, at most
 *   `retries` more times, before fresh parts; an attempt cut by a reconnect (`interrupted`)
 *   is tried again without counting. Any other error fails the task at once.
 * - A task out of attempts, or with no provider left, has failed for good: the job ends with
 *   it, or with `returnExceptions` it is the task's result.
 *
 * Where the next rules go: verification (redundant runs, spot checks) decides in
 * `outcome()` whether a success counts (`_accept`) and may hand a task to further slots from
 * `nextTask()`; a budget stop calls `stop()`, after which no attempt starts.
 * @module
 */
/** Failures of the job on one provider that ban it. */
export declare const MAX_PROVIDER_FAILURES = 2;
export declare const INTERRUPTED = "the connection to the hub dropped and is back";
export type Outcome = "ok" | "retry" | "timeout" | "provider_lost" | "error" | "interrupted";
export type JobEventKind = "job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done" | "task_retry" | "task_failed" | "provider_banned" | "waiting" | "job_done";
export type Task<P> = {
    index: number;
    item: P;
    /**
     * each failed attempt's error
     */
    errors: unknown[];
    /**
     * providers where an attempt failed: it goes elsewhere first
     */
    failedOn: Set<string>;
    /**
     * providers where the worker failed it: to blame if it succeeds elsewhere
     */
    suspects: Set<string>;
};
export type Failure<P> = {
    task: Task<P>;
    message: string;
    cause: unknown;
    /**
     * without returnExceptions the first failure ends the job
     */
    endsJob: boolean;
};
export type Verdict<P> = {
    /**
     * the activity may take another task (false: its provider was lost)
     */
    keep: boolean;
    failure: Failure<P> | null;
};
export type Emit = (kind: JobEventKind, task: number | null, provider: string | null, detail: string) => void;
/**
 * How an attempt ended.
 * @typedef {"ok" | "retry" | "timeout" | "provider_lost" | "error" | "interrupted"} Outcome
 */
/**
 * @typedef {"job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done"
 *   | "task_retry" | "task_failed" | "provider_banned" | "waiting" | "job_done"} JobEventKind
 */
/**
 * A task while it waits or runs.
 * @template P
 * @typedef {object} Task
 * @property {number} index
 * @property {P} item
 * @property {unknown[]} errors each failed attempt's error
 * @property {Set<string>} failedOn providers where an attempt failed: it goes elsewhere first
 * @property {Set<string>} suspects providers where the worker failed it: to blame if it succeeds elsewhere
 */
/**
 * A task failed for good: the executor makes its TaskFailedError from this.
 * @template P
 * @typedef {object} Failure
 * @property {Task<P>} task
 * @property {string} message
 * @property {unknown} cause
 * @property {boolean} endsJob without returnExceptions the first failure ends the job
 */
/**
 * What an attempt's outcome decided.
 * @template P
 * @typedef {object} Verdict
 * @property {boolean} keep the activity may take another task (false: its provider was lost)
 * @property {Failure<P> | null} failure
 */
/** @typedef {(kind: JobEventKind, task: number | null, provider: string | null, detail: string) => void} Emit */
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
 * One job's scheduling state. Make one per job; feed it what happens, do what it says.
 * Per slot: `wantsActivity()` (rent only when true), `hold()` with the activity, then
 * `nextTask()` / `start()` / `outcome()` for each task while `mayServe()`, and `free()` once
 * the activity is released. Each call's events have gone to `emit`, in order, when it returns.
 * @template P
 */
export declare class Scheduler<P> {
    retries: number;
    returnExceptions: boolean;
    /** @type {number | null} how many tasks the job has, when the parts tell (null until a generator runs out) */
    total: number | null;
    summary: JobSummary;
    /** attempts running now */
    running: number;
    /** @type {Set<string>} providers the job passes over: every rent excludes them */
    banned: Set<string>;
    /** no attempt starts: a task failed and ends the job, or the executor stopped it */
    stopped: boolean;
    /**
     * @param {Iterable<P>} parts
     * @param {Emit} emit
     * @param {{retries?: number, returnExceptions?: boolean}} [options]
     */
    constructor(parts: Iterable<P>, emit: Emit, { retries, returnExceptions }?: {
        retries?: number;
        returnExceptions?: boolean;
    });
    /** Parts read so far. */
    get read(): number;
    /** Every part read, and every task done or failed. */
    get finished(): boolean;
    /** Whether any slot holds an activity. */
    get holding(): boolean;
    /** How many slots to run: one per provider, no more than tasks. @param {number} maxProviders */
    slots(maxProviders: number): number;
    /** Whether a slot without an activity should rent one: a task waits (or may come). */
    wantsActivity(): boolean;
    /** More providers banned than a rent can exclude: nowhere is left to run the job. */
    tooManyBanned(): boolean;
    /** Whether the activity on `provider` should wait for (or take) another task. @param {string} provider */
    mayServe(provider: string): boolean;
    /** `slot` rented `activity` on `provider`. @param {number} slot @param {string} provider @param {string} activity */
    hold(slot: number, provider: string, activity: string): void;
    /** `slot` released its activity: it may rent another. @param {number} slot @param {string} activity */
    free(slot: number, activity: string): void;
    /** `provider` failed the job (lost it, or an activity in its setup): two failures ban it. @param {string} provider */
    providerFailed(provider: string): void;
    /** `provider` cannot run the job (its image is missing, its containers fail). @param {string} provider @param {string} why */
    ban(provider: string, why: string): void;
    /** Start no attempt from now on (the job ends: failed, cancelled, or out of budget). */
    stop(): void;
    /**
     * The next task for the activity on `provider`; null: none for it now (wait for a change).
     * One that has not failed there, else a fresh part, else one that failed there when no
     * other provider the job holds is a better place.
     * @param {string} provider
     * @returns {Task<P> | null}
     */
    nextTask(provider: string): Task<P> | null;
    /**
     * An attempt of `task` starts on `provider`; its number (1 for the first).
     * @param {Task<P>} task
     * @param {string} provider
     */
    start(task: Task<P>, provider: string): number;
    /**
     * The attempt of `task` on `provider` ended so; `error` and its `detail` ("Name: message")
     * when it failed. After an `ok`, hand the task's value on.
     * @param {Task<P>} task
     * @param {string} provider
     * @param {Outcome} outcome
     * @param {unknown} [error]
     * @param {string} [detail]
     * @returns {Verdict<P>}
     */
    outcome(task: Task<P>, provider: string, outcome: Outcome, error?: unknown, detail?: string): Verdict<P>;
    /** An attempt no longer counts (the job ended under it, or its connection did). */
    abandon(): void;
    /** Why no provider is left for the job: `why` and the providers the job passed over. @param {string} why */
    nowhereToRun(why: string): string;
    /** No task waiting has been tried yet: the job ends with a NoMatchError rather than TaskFailedError. */
    neverRan(): boolean;
    /**
     * Fail every task waiting (those tried first, then the parts left): no provider is left to
     * run them. Lazily: stop at a failure that ends the job.
     * @param {unknown} cause
     * @param {string} detail
     * @returns {Generator<Failure<P>, void, void>}
     */
    strand(cause: unknown, detail: string): Generator<Failure<P>, void, void>;
}
