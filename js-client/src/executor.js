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

import { Deferred, cancelledBy, settlesWithin } from "./deferred.js";
import {
  BudgetExceededError,
  CancelledError,
  ConnectionClosedError,
  ConnectionLostError,
  ContainerFailedError,
  DisputedError,
  ImageNotFoundError,
  KilnError,
  NoMatchError,
  ProviderLostError,
  RetryTaskError,
  TaskFailedError,
  TaskTimeoutError,
  UsageError,
} from "./errors.js";
import { MAX_EXCLUDE } from "./protocol/messages.js";
import { marketFields } from "./market.js";
import { formatCredits } from "./money.js";
import { ErrorCode } from "./protocol/generated/constants.js";
import { Timeline, renderHtml } from "./report.js";
import { INTERRUPTED, JobSummary, Redundant, Scheduler, SpotCheck } from "./scheduling.js";

export { JobSummary, Redundant, SpotCheck };

/** @typedef {import("./activity.js").Activity} Activity */
/**
 * An attempt under way: its number in the timeline, and the activity's bytes moved when it began.
 * @typedef {{started: number, task: number, attempt: number, activity: Activity, moved: number, open: boolean}} Running
 */
/** @typedef {import("./scheduling.js").JobEventKind} JobEventKind */
/** @template P @typedef {import("./scheduling.js").Task<P>} Task */
/** @template P @typedef {import("./scheduling.js").Failure<P>} Failure */

/** Events a consumer of {@link Job#events} may fall behind by before it loses the oldest. */
export const EVENT_BUFFER = 1024;
/** Results a job holds for {@link Job#results} to take: past this many, no task starts. */
export const RESULT_BUFFER = 1024;
const RENT_RETRY_MS = 500;
const TEARDOWN_MS = 60_000;
/** How long a timed-out worker may take to notice its signal before its activity is given up. */
const TIMEOUT_GRACE_MS = 2_000;
/** How long an ending job waits for its workers before releasing their activities anyway. */
const STOP_GRACE_MS = 5_000;
/** How long an ending job waits for the hub to take its verdicts. */
const VERDICT_WAIT_MS = 10_000;

/**
 * What a job needs of a requestor: `rent`, honouring `exclude` and `group` (and the market's options).
 * @typedef {object} Renter
 * @property {(options: import("./requestor.js").RentOptions) => Promise<Activity>} rent
 * @property {() => Promise<boolean>} [reconnected] waits out a reconnect of the requestor's connection:
 *   true when it is back, false when it is gone for good (a renter without it never reconnects)
 * @property {(listener: (cost: import("./requestor.js").CostInfo) => void) => () => void} [onCost] hears the
 *   hub's cost news (a renter without it: no `cost` events, nothing spent in the summary)
 * @property {(lost: string, agreed: string[]) => Promise<void>} [reportVerdict] tells the hub a run lost a
 *   verification (a renter without it: the verdicts stay in the job's events)
 * @property {(report: import("./requestor.js").TaskReportFields) => void} [reportTask] tells the hub (1.6)
 *   how an attempt went, without waiting and never throwing (a renter without it: the hub hears nothing)
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
 * Something that happened in a job, `elapsed` seconds after it started.
 * @typedef {object} JobEvent
 * @property {JobEventKind} kind
 * @property {number} elapsed
 * @property {number | null} task the task's index, when the event is about one
 * @property {string | null} provider the provider's name, when the event is about one
 * @property {string} detail
 * @property {import("./requestor.js").CostInfo} [cost] a `cost` event's capture
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
 * @property {number | string} [budget] (1.5) the most the job may spend at the hub, in credits (held there for it)
 * @property {import("./requestor.js").Strategy} [strategy] (1.5) how the hub picks the job's providers
 * @property {Iterable<string>} [allow] (1.5) only these providers
 * @property {Iterable<string>} [deny] never these providers
 * @property {number} [minReputation] (1.5) only providers whose reputation is at least this
 * @property {number} [maxDuration] (1.5) seconds each activity may be held (the hub ends it then)
 * @property {Redundant | SpotCheck} [verify] run tasks on several providers and compare their results
 */

/** The codes of an `activity_lost` by which the hub itself ended an activity (1.5). */
/** @type {Set<string>} */
const HUB_ENDED = new Set([ErrorCode.BUDGET_EXCEEDED, ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.EXPIRED]);

/**
 * What an attempt failed with, as the job counts it: when the hub ended the activity under a
 * command (its budget, the funds or the rent's maxDuration: `activity_lost` comes before the
 * command fails `cancelled`), that end, as a ProviderLostError with its code; else `error`.
 * @param {Activity} activity
 * @param {unknown} error
 * @returns {unknown}
 */
function endedUnder(activity, error) {
  const lost = activity.lost;
  const known = [ProviderLostError, RetryTaskError, TaskTimeoutError, ConnectionLostError, ConnectionClosedError, BudgetExceededError];
  if (lost == null || !HUB_ENDED.has(lost.code) || known.some((kind) => error instanceof kind)) return error;
  return new ProviderLostError(`activity ${activity.id} is gone: ${lost.message}`, { code: lost.code, cause: error });
}

let warnedOrder = false;

/**
 * The worker and the parts of `map(worker, parts)`, also when called the old way round,
 * `map(parts, worker)` (accepted for one release, with a deprecation warning once).
 * @template P, R
 * @param {Worker<P, R> | Iterable<P>} first
 * @param {Iterable<P> | Worker<P, R>} second
 * @returns {[Worker<P, R>, Iterable<P>]}
 */
export function workerAndParts(first, second) {
  const iterable = typeof first !== "function" && first != null && typeof (/** @type {any} */ (first)[Symbol.iterator]) === "function";
  if (!iterable) return [/** @type {Worker<P, R>} */ (first), /** @type {Iterable<P>} */ (second)];
  if (!warnedOrder) {
    warnedOrder = true;
    const message = "map(parts, worker, options) is deprecated: call map(worker, parts, options) (as job and mapUnordered)";
    const emitWarning = globalThis.process?.emitWarning;
    if (typeof emitWarning === "function") emitWarning.call(globalThis.process, message, { type: "DeprecationWarning", code: "KILN_MAP_ORDER" });
    else console.warn(`DeprecationWarning: ${message}`);
  }
  return [/** @type {Worker<P, R>} */ (second), /** @type {Iterable<P>} */ (first)];
}

/**
 * One split-run-combine job. Run it once, with {@link Job#run} or {@link Job#results}.
 * @template P, R
 */
export class Job {
  /**
   * @overload
   * @param {Renter} requestor
   * @param {Worker<P, R>} worker
   * @param {Iterable<P>} parts
   * @param {JobOptions} options
   */
  /**
   * The old order, accepted for one release with a deprecation warning.
   * @deprecated call `new Job(requestor, worker, parts, options)`
   * @overload
   * @param {Renter} requestor
   * @param {Iterable<P>} parts
   * @param {Worker<P, R>} worker
   * @param {JobOptions} options
   */
  /**
   * @param {Renter} requestor
   * @param {Worker<P, R> | Iterable<P>} worker
   * @param {Iterable<P> | Worker<P, R>} parts
   * @param {JobOptions} options
   */
  constructor(requestor, worker, parts, options) {
    [worker, parts] = workerAndParts(worker, parts);
    if (typeof worker !== "function") {
      throw new UsageError(`a job's worker must be a function: async (activity, part, context) => result, not ${kindOf(worker)}`);
    }
    if (parts == null || typeof (/** @type {any} */ (parts)[Symbol.iterator]) !== "function") {
      throw new UsageError(`a job's parts must be iterable (an array, a generator, ...), not ${kindOf(parts)}`);
    }
    for (const hook of /** @type {const} */ (["setup", "teardown"])) {
      if (options?.[hook] !== undefined && typeof options[hook] !== "function") {
        throw new UsageError(`a job's ${hook} must be a function: async (activity) => {...}, not ${kindOf(options[hook])}`);
      }
    }
    if (typeof options?.image !== "string") throw new UsageError("a job needs options.image");
    const { maxProviders = 4, retries = 2, taskTimeoutMs, startTimeoutMs = 60_000 } = options;
    if (!Number.isInteger(maxProviders) || maxProviders < 1) {
      throw new UsageError("maxProviders must be an integer of at least 1");
    }
    if (!Number.isInteger(retries) || retries < 0) throw new UsageError("retries must be an integer of at least 0");
    if (taskTimeoutMs !== undefined && !(taskTimeoutMs > 0)) {
      throw new UsageError("taskTimeoutMs must be a positive number of milliseconds");
    }
    if (!(startTimeoutMs >= 0)) throw new UsageError("startTimeoutMs must be a number of milliseconds");
    const verify = options.verify ?? null;
    if (verify !== null && !(verify instanceof Redundant || verify instanceof SpotCheck)) {
      throw new UsageError("verify is a new Redundant(n) or a new SpotCheck(p)");
    }
    if (verify instanceof Redundant && maxProviders < verify.n) {
      throw new UsageError(`${verify.n} copies of each task need maxProviders of ${verify.n} at least`);
    }
    this.requestor = requestor;
    this.worker = worker;
    this.image = options.image;
    this.demand = options.demand;
    this.user = options.user;
    this.maxProviders = maxProviders;
    this.retries = retries;
    this.taskTimeoutMs = taskTimeoutMs;
    this.startTimeoutMs = startTimeoutMs;
    this.setup = options.setup;
    this.teardown = options.teardown;
    this.returnExceptions = options.returnExceptions ?? false;
    this.signal = options.signal;
    /** The hub keeps the job's activities on distinct providers by this name. */
    this.group = `job-${randomHex(8)}`;
    /** @type {import("./market.js").RentMarket} the market's options of every rent, checked now */
    this._market = {};
    for (const key of /** @type {const} */ (["budget", "strategy", "allow", "deny", "minReputation", "maxDuration"])) {
      if (options[key] != null) Object.assign(this._market, { [key]: options[key] });
    }
    marketFields(this._market, this.group); // a UsageError now rather than at the first rent
    this.verify = verify;
    /** @type {Map<string, {provider: string, due: number}>} each activity the job rented: its provider, what it owes so far */
    this._costs = new Map();
    /** @type {Set<Promise<void>>} verdicts on their way to the hub */
    this._verdicts = new Set();
    /** @type {BudgetExceededError | null} why the job stopped renting, once its budget is spent */
    this._spent = null;
    /** @type {((event: JobEvent) => void)[]} */
    this._listeners = options.onEvent === undefined ? [] : [options.onEvent];
    /** @type {Scheduler<P>} the rules: which task goes where, blame, bans, retries */
    this._core = new Scheduler(parts, (kind, task, provider, detail) => this._scheduled(kind, task, provider, detail), {
      retries,
      returnExceptions: this.returnExceptions,
      verify,
    });
    this.summary = this._core.summary;
    /** @type {Map<Activity, number>} rented and not yet released, with the slot that holds it */
    this._activities = new Map();
    /** @type {Deferred<void>} */
    this._changed = new Deferred();
    /** @type {{error: unknown} | null} what ended the job early (failed, cancelled), once something has */
    this._failure = null;
    /** @type {Deferred<void>} settles when the job ends early */
    this._ended = new Deferred();
    /** @type {Set<AbortController>} the signals of the attempts running now */
    this._attempts = new Set();
    this._started = 0;
    /** @type {(index: number, value: R | TaskFailedError) => void} */
    this._emitResult = () => {};
    /** results handed to results() and not yet taken */
    this._undelivered = 0;
    this._used = false;
    /** every attempt: the report's */
    this._timeline = new Timeline();
  }

  // --- following the job ----------------------------------------------------------------

  /** How many tasks the job has: null while a generator of parts has not run out. */
  get total() {
    return this._core.total;
  }

  /** Attempts running now. */
  get running() {
    return this._core.running;
  }

  /**
   * Every attempt of the job's tasks so far, by start (the latest 10,000 that ended, and those
   * running): task, attempt number, provider, activity, start and end (seconds since the job
   * started), outcome, reason, bytes moved. Copies: the job's own record moves on.
   * @returns {import("./report.js").Attempt[]}
   */
  get attempts() {
    return this._timeline.attempts;
  }

  /**
   * The job's report as one self-contained HTML page (see {@link Job#report}): for a browser,
   * which has no file to write it to.
   * @param {string} [title] default `Kiln job <group>`
   * @returns {string}
   */
  reportHtml(title) {
    const timeline = this._timeline;
    return renderHtml(title ?? `Kiln job ${this.group}`, this.summary, timeline.attempts, { dropped: timeline.dropped });
  }

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
  async report(path, { title } = {}) {
    const html = this.reportHtml(title);
    /** @type {typeof import("node:fs/promises")} */
    let fs;
    try {
      // Loaded here, not imported above: the browser entry shares this module and has no files.
      fs = await import(/* webpackIgnore: true */ /* @vite-ignore */ "node:fs/promises");
    } catch (e) {
      throw new UsageError("job.report(path) writes a file, which only Node can: in a browser, take job.reportHtml()", { cause: e });
    }
    await fs.writeFile(path, html, "utf8");
    return path;
  }

  /**
   * Call `listener` (synchronously, so keep it quick) for every event.
   * @param {(event: JobEvent) => void} listener
   * @returns {() => void} stops the calls
   */
  subscribe(listener) {
    this._listeners.push(listener);
    return () => {
      const at = this._listeners.indexOf(listener);
      if (at !== -1) this._listeners.splice(at, 1);
    };
  }

  /**
   * The job's events as they happen, until `job_done`. Call it before running the job.
   * Bounded: a consumer more than {@link EVENT_BUFFER} events behind loses the oldest.
   * @returns {AsyncGenerator<JobEvent, void, void>}
   */
  events() {
    /** @type {JobEvent[]} */
    const buffer = [];
    /** @type {Deferred<void> | null} */
    let ready = null;
    const unsubscribe = this.subscribe((event) => {
      buffer.push(event);
      if (buffer.length > EVENT_BUFFER) buffer.shift();
      ready?.resolve();
    });
    return (async function* () {
      try {
        for (;;) {
          while (buffer.length === 0) {
            ready = new Deferred();
            await ready.promise;
            ready = null;
          }
          const event = /** @type {JobEvent} */ (buffer.shift());
          yield event;
          if (event.kind === "job_done") return;
        }
      } finally {
        unsubscribe();
      }
    })();
  }

  /**
   * @param {JobEventKind} kind
   * @param {{task?: number | null, provider?: string | null, detail?: string}} [about]
   */
  _event(kind, { task = null, provider = null, detail = "" } = {}) {
    if (this._listeners.length === 0) return;
    const elapsed = (performance.now() - this._started) / 1000;
    const event = Object.freeze({ kind, elapsed, task, provider, detail });
    for (const listener of [...this._listeners]) listener(event);
  }

  /**
   * An event of the scheduling core; what it decided may let a waiting slot go on.
   * @param {JobEventKind} kind @param {number | null} task @param {string | null} provider @param {string} detail
   */
  _scheduled(kind, task, provider, detail) {
    this._event(kind, { task, provider, detail });
    this._notify();
  }

  // --- running it -----------------------------------------------------------------------

  /**
   * Run the job; the results in input order. With `returnExceptions`, a task that failed
   * for good has its TaskFailedError in its place.
   * @returns {Promise<R[]>}
   */
  async run() {
    /** @type {(R | TaskFailedError)[]} */
    const results = new Array(this.total ?? 0);
    for await (const [index, value] of this.results()) results[index] = value;
    return /** @type {R[]} */ (results);
  }

  /**
   * Run the job, yielding `[index, result]` as each task finishes. Stopping the iteration
   * early ends the job (its activities are released before the iteration returns).
   * @returns {AsyncGenerator<[number, R | TaskFailedError], void, void>}
   */
  async *results() {
    if (this._used) throw new UsageError("a Job runs once; make a new one");
    this._used = true;
    /** @type {[number, R | TaskFailedError][]} bounded: no task starts while RESULT_BUFFER wait here */
    const queue = [];
    /** @type {Deferred<void> | null} */
    let ready = null;
    this._emitResult = (index, value) => {
      this._undelivered += 1;
      queue.push([index, value]);
      ready?.resolve();
    };
    let over = false;
    const driving = this._drive().finally(() => {
      over = true;
      ready?.resolve();
    });
    driving.catch(() => {}); // seen below, or abandoned with the iteration
    let finished = false;
    try {
      for (;;) {
        while (queue.length === 0 && !over) {
          ready = new Deferred();
          await ready.promise;
          ready = null;
        }
        if (queue.length === 0) break;
        this._undelivered -= 1;
        if (this._undelivered === RESULT_BUFFER - 1) this._notify();
        yield /** @type {[number, R | TaskFailedError]} */ (queue.shift());
      }
      await driving; // the job's error, if it ended with one
      finished = true;
    } finally {
      if (!finished) {
        this._end(new CancelledError("the job's results were abandoned")); // no-op if the job failed
        await driving.catch(() => {});
      }
    }
  }

  async _drive() {
    this._started = performance.now();
    const total = this.total;
    this._event("job_started", { detail: total === null ? "tasks as the parts come" : `${total} tasks` });
    const signal = this.signal;
    const cancel = () => this._end(cancelledBy(/** @type {AbortSignal} */ (signal), "the job"));
    if (signal?.aborted) cancel();
    else signal?.addEventListener("abort", cancel, { once: true });
    const unsubscribe = this.requestor.onCost?.((cost) => this._cost(cost)) ?? (() => {});
    try {
      const count = this._core.slots(this.maxProviders);
      const slots = Promise.all(Array.from({ length: count }, (_, slot) => this._slot(slot).catch((e) => this._end(e))));
      await Promise.race([slots, this._ended.promise]);
      if (this.stopped && !(await settlesWithin(slots, STOP_GRACE_MS))) {
        // A worker that ignores its signal cannot be stopped: its activity is released under it.
        await Promise.all([...this._activities.keys()].map((activity) => this._release(activity)));
      }
      if (this._spent !== null && !this.stopped) this._budgetSpent(this._spent);
    } catch (e) {
      this._end(e);
    } finally {
      await settlesWithin(Promise.allSettled([...this._verdicts]), VERDICT_WAIT_MS);
      unsubscribe();
      signal?.removeEventListener("abort", cancel);
      this._core.stop();
      this.summary.wallSeconds = (performance.now() - this._started) / 1000;
      this.summary.failedProviders = new Set(this._core.banned);
      this._event("job_done", { detail: this.summary.lines().join("\n") });
    }
    if (this._failure !== null) throw this._failure.error;
  }

  /**
   * The budget is spent and the attempts under way are over: every task not done fails; the
   * job ends with a BudgetExceededError (with returnExceptions, each task's TaskFailedError,
   * caused by the budget, is its result).
   * @param {BudgetExceededError} spent
   */
  _budgetSpent(spent) {
    for (const failure of this._core.strand(spent, describe(spent))) this._failed(failure);
  }

  /** A capture of the hub's for one of the job's activities: a `cost` event, and the summary's spending. @param {import("./requestor.js").CostInfo} cost */
  _cost(cost) {
    const known = this._costs.get(cost.activity);
    if (known === undefined) return; // not this job's
    const spent = this.summary.spentMicro;
    // Captures are cumulative: the summary takes the difference from the last one heard.
    spent.set(known.provider, (spent.get(known.provider) ?? 0) + Math.max(cost.dueMicro - known.due, 0));
    known.due = Math.max(known.due, cost.dueMicro);
    const detail = `${cost.activity}: ${formatCredits(cost.dueMicro)} credits${cost.final ? " in all" : " so far"}`;
    if (this._listeners.length === 0) return;
    const elapsed = (performance.now() - this._started) / 1000;
    const event = Object.freeze({ kind: /** @type {const} */ ("cost"), elapsed, task: null, provider: known.provider, detail, cost });
    for (const listener of [...this._listeners]) listener(event);
  }

  /** Whether the job ended early: no new rents or attempts, and what a worker does no longer counts. */
  get stopped() {
    return this._failure !== null;
  }

  /**
   * End the job early with `error` (the first one counts); every running attempt's signal fires.
   * @param {unknown} error
   */
  _end(error) {
    if (this.stopped) return;
    this._failure = { error };
    this._core.stop();
    for (const attempt of this._attempts) attempt.abort(error);
    this._ended.resolve();
    this._notify();
  }

  _notify() {
    const changed = this._changed;
    this._changed = new Deferred();
    changed.resolve();
  }

  /**
   * Until something changes (a task is done or back, an activity released, the job
   * ended), or `ms` pass.
   * @param {number} [ms]
   */
  _changes(ms) {
    const changed = this._changed.promise;
    return ms === undefined ? changed : settlesWithin(changed, ms);
  }

  /** @param {number} slot */
  async _slot(slot) {
    const core = this._core;
    while (!core.finished && !this.stopped) {
      const activity = await this._acquire();
      if (activity === null) return;
      this._activities.set(activity, slot);
      if (!this._costs.has(activity.id)) this._costs.set(activity.id, { provider: activity.provider, due: 0 });
      if (activity.cost != null) this._cost(activity.cost); // captured before the job knew it
      core.hold(slot, activity.provider, activity.id);
      try {
        await this._serve(activity);
      } finally {
        await this._release(activity);
      }
    }
  }

  /**
   * Rent an activity on a provider this job does not hold yet (null: nothing left to do).
   * @returns {Promise<Activity | null>}
   */
  async _acquire() {
    const core = this._core;
    const waitingSince = performance.now();
    while (!core.finished && !this.stopped) {
      if (core.overBudget) return null;
      if (!core.wantsActivity()) {
        if (!core.finished) await this._changes();
        continue;
      }
      if (core.tooManyBanned()) {
        this._nowhereToRun(new NoMatchError(`more than ${MAX_EXCLUDE} providers failed this job`), { waited: false });
        return null;
      }
      try {
        return await this.requestor.rent({
          image: this.image,
          demand: this.demand,
          ...(this.user === undefined ? {} : { user: this.user }),
          ...this._market,
          exclude: [...core.banned, ...core.avoid()],
          group: this.group,
          // A provider loading the job's image from the hub's store: how far it is.
          onProgress: ({ provider, done, total }) => {
            this._event("image_loading", { provider, detail: `${done} of ${total} bytes` });
          },
        });
      } catch (e) {
        if (e instanceof BudgetExceededError) {
          this._budgetExceeded(e);
          return null;
        }
        if (e instanceof ProviderLostError) continue; // it vanished while starting our container: try another
        if (e instanceof ConnectionLostError && (await this._reconnected())) continue; // dropped and back: rent again
        if ((e instanceof ImageNotFoundError || e instanceof ContainerFailedError) && e.provider !== null) {
          // This provider cannot run the job's containers; the others may.
          core.ban(e.provider, e.message);
          continue;
        }
        if (!(e instanceof NoMatchError)) throw e;
        if (core.holding && !core.blocked()) {
          // Others are working: wait for a provider to join or to be released.
          await this._changes(RENT_RETRY_MS * 4);
          continue;
        }
        if (performance.now() - waitingSince > this.startTimeoutMs) {
          this._nowhereToRun(e);
          return null;
        }
        this._event("waiting", { detail: e.message });
        await this._changes(RENT_RETRY_MS);
      }
    }
    return null;
  }

  /**
   * No provider is left to take the job: its tasks fail, not a misleading NoMatch. A task
   * that was tried already fails with its attempts (a TaskFailedError); a job none of whose
   * tasks ever ran ends with the NoMatchError itself.
   * @param {NoMatchError} reason
   * @param {{waited?: boolean}} [options]
   */
  _nowhereToRun(reason, { waited = true } = {}) {
    const core = this._core;
    const why = core.nowhereToRun(
      waited ? `no provider for this job after ${this.startTimeoutMs / 1000} s: ${reason.message}` : reason.message,
    );
    const cause = new NoMatchError(why, { cause: reason });
    if (core.neverRan()) throw cause;
    // Retries wait at the front: without returnExceptions the first of them ends the job.
    for (const failure of core.strand(cause, describe(cause))) this._failed(failure);
  }

  /**
   * Tear down (if asked) and release `activity`; the release happens whatever teardown does.
   * @param {Activity} activity
   */
  async _release(activity) {
    const slot = this._activities.get(activity);
    if (slot === undefined) return; // released already (by a job that stopped waiting)
    this._activities.delete(activity);
    const teardown = this.teardown;
    if (teardown !== undefined && activity.lost === null && !activity.released && !this.stopped) {
      // A failed or stuck teardown must not keep the container alive.
      await settlesWithin(Promise.resolve().then(() => teardown(activity)), TEARDOWN_MS);
    }
    try {
      await activity.release();
    } catch (e) {
      if (!(e instanceof KilnError)) throw e;
    }
    if (activity.cpuSeconds !== null) {
      const cpu = this.summary.cpuSeconds;
      cpu.set(activity.provider, (cpu.get(activity.provider) ?? 0) + activity.cpuSeconds);
    }
    this._core.free(slot, activity.id);
  }

  /** @param {Activity} activity */
  async _serve(activity) {
    const provider = activity.provider;
    if (this.setup !== undefined) {
      try {
        await this.setup(activity);
      } catch (e) {
        if (!(e instanceof ProviderLostError)) throw e;
        this._core.providerFailed(provider);
        return;
      }
    }
    for (;;) {
      const task = await this._nextTask(provider);
      if (task === null) return;
      const healthy = await this._attempt(task, activity);
      if (!healthy || this._core.banned.has(provider) || activity.lost !== null) return;
    }
  }

  /**
   * The next task for `provider` (see `Scheduler.nextTask`), once results have room.
   * @param {string} provider
   * @returns {Promise<Task<P> | null>}
   */
  async _nextTask(provider) {
    const core = this._core;
    while (core.mayServe(provider) && !this.stopped) {
      const task = this._undelivered < RESULT_BUFFER ? core.nextTask(provider) : null;
      if (task !== null) return task;
      // What waits needs another provider (a copy of a task this one has run): give this
      // activity up, and rent elsewhere.
      if (core.blocked()) return null;
      await this._changes(RENT_RETRY_MS * 4);
    }
    return null;
  }

  /**
   * The hub says the job's budget is spent: no new rents; the activities held go on, and once
   * none is left every task not done fails (see `_drive`).
   * @param {BudgetExceededError} error
   */
  _budgetExceeded(error) {
    if (this._spent === null) {
      this._spent = error;
      this._event("waiting", { detail: `the job's budget is spent: ${error.message}` });
    }
    this._core.budgetExceeded();
    this._notify();
  }

  /**
   * Run one attempt of `task`; false when the activity should be given up.
   * @param {Task<P>} task
   * @param {Activity} activity
   * @returns {Promise<boolean>}
   */
  async _attempt(task, activity) {
    const under = this._begin(task, activity);
    try {
      return await this._run(task, activity, under);
    } finally {
      if (under.open) this._finish(under, "lost", "the job ended while it ran", "failed");
    }
  }

  /**
   * An attempt of `task` starts on `activity`: tell the core, the timeline and the hub.
   * @param {Task<P>} task @param {Activity} activity
   * @returns {Running}
   */
  _begin(task, activity) {
    const attempt = this._core.start(task, activity.provider);
    const at = (performance.now() - this._started) / 1000;
    const started = this._timeline.start(task.index, attempt, activity.provider, activity.id, at);
    this.requestor.reportTask?.({ group: this.group, task: task.index, attempt, state: "started", activity: activity.id });
    return { started, task: task.index, attempt, activity, moved: activity.moved ?? 0, open: true };
  }

  /**
   * The attempt `running` ended so: the timeline and the hub hear it (once).
   * @param {Running} running
   * @param {import("./report.js").AttemptOutcome} outcome
   * @param {string} reason
   * @param {"done" | "retried" | "failed"} state
   */
  _finish(running, outcome, reason, state) {
    running.open = false;
    const moved = (running.activity.moved ?? 0) - running.moved;
    this._timeline.end(running.started, outcome, reason, moved, (performance.now() - this._started) / 1000);
    const { task, attempt, activity } = running;
    this.requestor.reportTask?.({ group: this.group, task, attempt, state, activity: activity.id, reason, bytes: moved });
  }

  /**
   * @param {Task<P>} task
   * @param {Activity} activity
   * @param {Running} under
   * @returns {Promise<boolean>}
   */
  async _run(task, activity, under) {
    const provider = activity.provider;
    const core = this._core;
    const attempt = new AbortController();
    this._attempts.add(attempt);
    const context = { index: task.index, attempt: under.attempt, signal: attempt.signal };
    const running = Promise.resolve().then(() => {
      const returned = this.worker(activity, task.item, context);
      if (!isThenable(returned)) {
        throw new UsageError(`the worker must return a promise (be an async function), and it returned ${kindOf(returned)}`);
      }
      return returned;
    });
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    /** @type {Promise<{ok: false, error: unknown}>} */
    const timedOut = new Promise((resolve) => {
      if (this.taskTimeoutMs === undefined) return;
      const ms = this.taskTimeoutMs;
      timer = setTimeout(() => {
        const error = new TaskTimeoutError(`attempt ran past taskTimeoutMs=${ms} on ${provider}`);
        attempt.abort(error);
        resolve({ ok: false, error });
      }, ms);
    });
    /** @type {{ok: true, value: R} | {ok: false, error: unknown}} */
    let outcome;
    try {
      outcome = await Promise.race([
        running.then(
          (value) => ({ ok: /** @type {const} */ (true), value }),
          (error) => ({ ok: /** @type {const} */ (false), error }),
        ),
        timedOut,
      ]);
    } finally {
      clearTimeout(timer);
      this._attempts.delete(attempt);
    }
    if (this.stopped) {
      core.abandon(); // the job is over: what the worker did no longer counts
      return false;
    }
    if (outcome.ok) {
      const verdict = core.outcome(task, provider, "ok", null, "", outcome.value);
      this._finish(under, "done", "", "done");
      for (const dispute of verdict.disputes ?? []) this._reportVerdict(dispute);
      if (verdict.failure !== null) this._failed(verdict.failure);
      // The accepted run's value: the first of those that agreed, perhaps another attempt's.
      if (verdict.accepted != null) this._emitResult(task.index, /** @type {R} */ (verdict.accepted.value));
      return true;
    }
    const error = endedUnder(activity, outcome.error);
    if (error instanceof BudgetExceededError) {
      // The group's budget ran out under the attempt: not the task's fault nor the provider's.
      this._budgetExceeded(error);
      core.outcome(task, provider, "interrupted");
      this._finish(under, "lost", describe(error), "retried");
      return false;
    }
    if (error instanceof ConnectionLostError && (await this._reconnected())) {
      if (this.stopped) {
        core.abandon();
        return false;
      }
      core.outcome(task, provider, "interrupted"); // not the task's fault, nor the provider's
      this._finish(under, "retried", INTERRUPTED, "retried");
      return true;
    }
    if (error instanceof ConnectionClosedError) {
      core.abandon();
      this._finish(under, "lost", describe(error), "failed");
      throw error; // the hub is gone, or closed by us: nothing to retry on
    }
    if (error instanceof ProviderLostError && activity.lost === null && error.code === ErrorCode.PROVIDER_LOST) {
      // The request failed, not the activity (no activity_lost came first): the hub lost its way to
      // the provider for a moment (a link between hubs broke) and holds the activity until the
      // provider is back. Neither the task's fault nor the provider's: again on it.
      core.outcome(task, provider, "interrupted");
      this._finish(under, "retried", INTERRUPTED, "retried");
      return true;
    }
    /** @type {import("./scheduling.js").Outcome} */
    const kind =
      error instanceof ProviderLostError ? this._lost(error)
      : error instanceof RetryTaskError ? "retry"
      : error instanceof TaskTimeoutError ? "timeout"
      : "error";
    const verdict = core.outcome(task, provider, kind, error, describe(error));
    const state = verdict.failure === null ? "retried" : "failed";
    this._finish(under, error instanceof ProviderLostError ? "lost" : state, describe(error), state);
    if (verdict.failure !== null) this._failed(verdict.failure);
    if (!verdict.keep || error instanceof ProviderLostError) return false; // the hub ended it: give it up
    // Reuse the activity after a timeout only if the worker let go of it when its signal fired.
    return kind === "timeout" ? settlesWithin(running, TIMEOUT_GRACE_MS) : true;
  }

  /**
   * How an attempt whose activity the hub ended counts: by why it ended.
   * @param {ProviderLostError} error
   * @returns {import("./scheduling.js").Outcome}
   */
  _lost(error) {
    if (error.code === ErrorCode.BUDGET_EXCEEDED) {
      this._budgetExceeded(new BudgetExceededError(error.message, { cause: error }));
      return "interrupted"; // not the task's fault nor the provider's; it fails with the budget
    }
    if (error.code === ErrorCode.INSUFFICIENT_FUNDS) return "interrupted"; // the next rent says so, and ends the job
    if (error.code === ErrorCode.EXPIRED) return "timeout"; // the rent's maxDuration: as a task that ran too long
    return "provider_lost";
  }

  /**
   * Tell the hub a run lost a verification (once; the job waits for it before it ends).
   * @param {import("./scheduling.js").Dispute} dispute
   */
  _reportVerdict(dispute) {
    const report = this.requestor.reportVerdict;
    if (report === undefined || dispute.activity === "") return;
    const sending = report.call(this.requestor, dispute.activity, dispute.agreed).catch((/** @type {unknown} */ e) => {
      this._event("waiting", { provider: dispute.provider, detail: `the hub did not take the verdict on ${dispute.activity}: ${describe(e)}` });
    });
    this._verdicts.add(sending);
    void sending.finally(() => this._verdicts.delete(sending));
  }

  /** Wait out a reconnect of the requestor's connection: whether it is back. */
  async _reconnected() {
    return this.requestor.reconnected === undefined ? false : this.requestor.reconnected();
  }

  /**
   * A task failed for good: the job ends with its TaskFailedError, or that is its result.
   * @param {Failure<P>} failure
   */
  _failed({ task, message, cause, endsJob }) {
    if (endsJob && cause instanceof BudgetExceededError) {
      const spent = new BudgetExceededError(`${cause.message}; the job stopped: ${message}`, { cause });
      this._end(spent);
      throw spent;
    }
    const why = cause ?? new DisputedError(message);
    const error = new TaskFailedError(message, { index: task.index, item: task.item, attempts: [...task.errors], cause: why });
    if (endsJob) {
      this._end(error); // no new rents or attempts while the job winds down
      throw error;
    }
    this._emitResult(task.index, error);
  }
}

/** @param {unknown} value @returns {value is PromiseLike<unknown>} */
const isThenable = (value) =>
  (typeof value === "object" || typeof value === "function") && value !== null && typeof (/** @type {any} */ (value).then) === "function";

/** What `value` is, for a message: `undefined`, `a number`, `an object`, ... @param {unknown} value */
const kindOf = (value) => {
  if (value === null || value === undefined) return String(value);
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? "an" : "a"} ${type}`;
};

/** @param {unknown} error */
const describe = (error) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

/** @param {number} bytes */
const randomHex = (bytes) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
