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
 *   job holds (and has not banned) has spared.
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
 * - **Verification** (`verify`): with {@link Redundant}`(n)` each task runs on `n` distinct
 *   providers (never twice on one) and is accepted when `n` results agree (`agree(a, b)`,
 *   default: the same JSON, see {@link sameResult}): the first of them is the task's result.
 *   While no value has `n` agreeing, another copy runs on a new provider, at most `2n - 1`
 *   runs in all; past that the task fails (*disputed*). With {@link SpotCheck}`(p)`, after a
 *   task's first result `chance() < p` runs one more copy elsewhere: agreeing, the task is
 *   accepted (verified); else it goes on as `Redundant(2)` (a third run breaks the tie).
 *   Copies wait with the retries, before fresh parts, for a slot whose provider is not
 *   running the task and has no result of it; when no slot's provider may take any (the job
 *   is `blocked()`), slots give their activities up and rent elsewhere, excluding `avoid()`.
 *   A copy's failures follow the retry rules (they
 *   count among the task's attempts). Every run whose result disagrees with the accepted one
 *   *lost*: the verdict names its activity and those of the agreeing runs ({@link Dispute}),
 *   it never becomes a result, and it is a failure of its provider (two ban it). A result of
 *   a task already accepted or failed is ignored.
 * - **Budget**: after `budgetExceeded()` nothing more is rented; the activities the job holds
 *   go on taking its tasks (each has its own hold), and once none is held, `strand()` fails
 *   every task not done ("the job's budget is spent").
 * @module
 */
/** The most copies {@link Redundant} asks for (`2n - 1` runs must fit a verdict's `agreed`). */
export declare const MAX_REDUNDANCY = 8;
export type Agree = (a: any, b: any) => boolean;
/**
 * Whether two results of a task are the same answer.
 * @typedef {(a: any, b: any) => boolean} Agree
 */
/**
 * Whether two results are the same answer by default: the same value (`Object.is`), or the
 * same JSON text (as Python's `==` compares lists and dicts by content; a Map, a Set, NaN,
 * Infinity and a BigInt by what they hold, not as JSON writes them). Pass `agree` for more.
 * @type {Agree}
 */
export declare function sameResult(a: any, b: any): boolean;
/**
 * Run each task on `n` distinct providers; accept a result when `n` of them agree
 * (`agree(a, b)`, default {@link sameResult}), with at most `2n - 1` runs (then the task is
 * disputed). `new Redundant(2)`.
 */
export declare class Redundant {
    n: number;
    /** @type {Agree | null} */
    agree: Agree | null;
    /** @param {number} [n] @param {{agree?: Agree}} [options] */
    constructor(n?: number, { agree }?: {
        agree?: Agree;
    });
    /** The runs a task needs at the least. */
    get copies(): number;
}
/**
 * After a task's first result, run it again on another provider with probability `p`; a
 * disagreement is settled as by `Redundant(2)`. `new SpotCheck(0.1)`.
 */
export declare class SpotCheck {
    p: number;
    /** @type {Agree | null} */
    agree: Agree | null;
    /** @param {number} p @param {{agree?: Agree}} [options] */
    constructor(p: number, { agree }?: {
        agree?: Agree;
    });
    get copies(): 1 | 2;
}
export type Verify = Redundant | SpotCheck;
export type Run = {
    provider: string;
    activity: string;
    value: unknown;
};
export type Dispute = {
    provider: string;
    activity: string;
    agreed: string[];
};
/** @typedef {Redundant | SpotCheck} Verify */
/**
 * A successful attempt: where it ran and what it returned.
 * @typedef {{provider: string, activity: string, value: unknown}} Run
 */
/**
 * A run whose result lost against `agreed` (the activities of the accepted result's runs):
 * report it to the hub (`requestor.reportVerdict(activity, agreed)`).
 * @typedef {{provider: string, activity: string, agreed: string[]}} Dispute
 */
/** Failures of the job on one provider that ban it. */
export declare const MAX_PROVIDER_FAILURES = 2;
export declare const INTERRUPTED = "the connection to the hub dropped and is back";
export type Outcome = "ok" | "retry" | "timeout" | "provider_lost" | "error" | "interrupted";
export type JobEventKind = "job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done" | "task_retry" | "task_failed" | "provider_banned" | "waiting" | "task_verified" | "task_disputed" | "cost" | "job_done";
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
    /**
     * its results so far, under verification (in the order they came)
     */
    runs: Run[];
    /**
     * providers running it now or holding a result of it: no copy goes there
     */
    busy: Set<string>;
    /**
     * attempts to hand out (retries and copies): while above 0, the task waits in the queue
     */
    wanted: number;
    /**
     * its attempts running now
     */
    running: number;
    /**
     * agreeing results that accept it
     */
    needed: number;
    /**
     * accepted or failed: any later result of it is ignored
     */
    settled: boolean;
    disputed: boolean;
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
    /**
     * the task is done: this run's value is its result
     */
    accepted?: Run | null;
    /**
     * runs that lost against the accepted result: report each to the hub
     */
    disputes?: Dispute[];
};
export type Emit = (kind: JobEventKind, task: number | null, provider: string | null, detail: string) => void;
/**
 * How an attempt ended.
 * @typedef {"ok" | "retry" | "timeout" | "provider_lost" | "error" | "interrupted"} Outcome
 */
/**
 * @typedef {"job_started" | "image_loading" | "rented" | "released" | "task_started" | "task_done"
 *   | "task_retry" | "task_failed" | "provider_banned" | "waiting" | "task_verified" | "task_disputed" | "cost"
 *   | "job_done"} JobEventKind
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
 * @property {Run[]} runs its results so far, under verification (in the order they came)
 * @property {Set<string>} busy providers running it now or holding a result of it: no copy goes there
 * @property {number} wanted attempts to hand out (retries and copies): while above 0, the task waits in the queue
 * @property {number} running its attempts running now
 * @property {number} needed agreeing results that accept it
 * @property {boolean} settled accepted or failed: any later result of it is ignored
 * @property {boolean} disputed
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
 * @property {Run | null} [accepted] the task is done: this run's value is its result
 * @property {Dispute[]} [disputes] runs that lost against the accepted result: report each to the hub
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
    /** tasks accepted after their results were compared */
    verified: number;
    /** tasks whose results disagreed */
    disputed: number;
    /** @type {Map<string, number>} runs each provider lost against an agreeing majority */
    lostBy: Map<string, number>;
    /** @type {Map<string, number>} what the hub captured for the job's activities, per provider, in micro-credits */
    spentMicro: Map<string, number>;
    /** @param {number} tasks */
    constructor(tasks: number);
    /** What the job spent at the hub, in credits (as the hub's `cost` messages said). */
    get spent(): number;
    /** What the job spent on each provider, in credits. @returns {Map<string, number>} */
    get spentByProvider(): Map<string, number>;
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
    verify: Verify | null;
    /** @type {number | null} how many tasks the job has, when the parts tell (null until a generator runs out) */
    total: number | null;
    summary: JobSummary;
    /** attempts running now */
    running: number;
    /** @type {Set<string>} providers the job passes over: every rent excludes them */
    banned: Set<string>;
    /** no attempt starts: a task failed and ends the job, or the executor stopped it */
    stopped: boolean;
    /** the job's budget is spent ({@link Scheduler#budgetExceeded}) */
    overBudget: boolean;
    /**
     * @param {Iterable<P>} parts
     * @param {Emit} emit
     * @param {{retries?: number, returnExceptions?: boolean, verify?: Verify | null, chance?: () => number}} [options]
     *   `chance` gives a float in [0, 1) for each spot check (default Math.random; the vectors fix its values)
     */
    constructor(parts: Iterable<P>, emit: Emit, { retries, returnExceptions, verify, chance }?: {
        retries?: number;
        returnExceptions?: boolean;
        verify?: Verify | null;
        chance?: () => number;
    });
    /** Parts read so far. */
    get read(): number;
    /** Every part read, and every task done or failed. */
    get finished(): boolean;
    /** Whether any slot holds an activity. */
    get holding(): boolean;
    /** How many slots to run: one per provider, no more than the runs the tasks need. @param {number} maxProviders */
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
     * The hub refused a rent, or ended an activity, because the job's budget is spent: nothing
     * more is rented, the activities held go on serving; once none is held, `strand()` fails
     * the tasks not done.
     */
    budgetExceeded(): void;
    /**
     * Nothing the job holds can go on: no attempt runs, and no provider it holds may take a
     * task waiting (a copy wants a provider it lacks). Renting is then the only way on.
     */
    blocked(): boolean;
    /**
     * Providers a new activity would be of no use on: every task waiting has run there or runs
     * there (none while a fresh part waits). A blocked slot gives its activity up and rents
     * again, excluding these.
     * @returns {Set<string>}
     */
    avoid(): Set<string>;
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
     * The attempt of `task` on `provider` ended so: `ok` with the worker's `value`, else `error`
     * and its `detail` ("Name: message"). When the answer's `accepted` is set, the task is done
     * and that run's value is its result; report its `disputes`.
     * @param {Task<P>} task
     * @param {string} provider
     * @param {Outcome} outcome
     * @param {unknown} [error]
     * @param {string} [detail]
     * @param {unknown} [value]
     * @returns {Verdict<P>}
     */
    outcome(task: Task<P>, provider: string, outcome: Outcome, error?: unknown, detail?: string, value?: unknown): Verdict<P>;
    /** An attempt no longer counts (the job ended under it, or its connection did). */
    abandon(): void;
    /** Why no provider is left for the job: `why` and the providers the job passed over. @param {string} why */
    nowhereToRun(why: string): string;
    /** No task waiting has been tried yet: the job ends with a NoMatchError rather than TaskFailedError. */
    neverRan(): boolean;
    /**
     * Fail every task waiting (those tried first, then the parts left): no provider is left to
     * run them, or the job's budget is spent. Lazily: stop at a failure that ends the job.
     * @param {unknown} cause
     * @param {string} detail
     * @returns {Generator<Failure<P>, void, void>}
     */
    strand(cause: unknown, detail: string): Generator<Failure<P>, void, void>;
}
