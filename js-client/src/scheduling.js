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

import { MAX_EXCLUDE } from "./protocol/messages.js";

/** Failures of the job on one provider that ban it. */
export const MAX_PROVIDER_FAILURES = 2;
export const INTERRUPTED = "the connection to the hub dropped and is back";

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
export class JobSummary {
  /** @param {number} tasks */
  constructor(tasks) {
    this.tasks = tasks;
    this.succeeded = 0;
    this.failed = 0;
    this.attempts = 0;
    this.retries = 0;
    this.wallSeconds = 0;
    /** @type {Map<string, number>} tasks each provider finished */
    this.tasksPerProvider = new Map();
    /** @type {Map<string, number>} CPU time the containers on each provider used */
    this.cpuSeconds = new Map();
    /** @type {Set<string>} providers the job banned */
    this.failedProviders = new Set();
  }

  /** The summary as text, one line for the job and one per provider (as Python's `lines()`). */
  lines() {
    const lines = [
      `tasks ${this.tasks}: ${this.succeeded} done, ${this.failed} failed; attempts ${this.attempts}, ` +
        `retries ${this.retries}; wall time ${this.wallSeconds.toFixed(2)} s`,
    ];
    for (const provider of [...new Set([...this.tasksPerProvider.keys(), ...this.cpuSeconds.keys()])].sort()) {
      lines.push(
        `  ${provider}: ${this.tasksPerProvider.get(provider) ?? 0} tasks, ` +
          `${(this.cpuSeconds.get(provider) ?? 0).toFixed(2)} container CPU-seconds` +
          (this.failedProviders.has(provider) ? "  (failed)" : ""),
      );
    }
    return lines;
  }
}

/** @param {number} count @param {string} noun */
const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

/**
 * One job's scheduling state. Make one per job; feed it what happens, do what it says.
 * Per slot: `wantsActivity()` (rent only when true), `hold()` with the activity, then
 * `nextTask()` / `start()` / `outcome()` for each task while `mayServe()`, and `free()` once
 * the activity is released. Each call's events have gone to `emit`, in order, when it returns.
 * @template P
 */
export class Scheduler {
  /**
   * @param {Iterable<P>} parts
   * @param {Emit} emit
   * @param {{retries?: number, returnExceptions?: boolean}} [options]
   */
  constructor(parts, emit, { retries = 2, returnExceptions = false } = {}) {
    this.retries = retries;
    this.returnExceptions = returnExceptions;
    this._emit = emit;
    /** @type {number | null} how many tasks the job has, when the parts tell (null until a generator runs out) */
    this.total = Array.isArray(parts) ? parts.length : null;
    this.summary = new JobSummary(this.total ?? 0);
    this._parts = parts[Symbol.iterator]();
    this._read = 0;
    /** @type {Task<P> | null} the one part read to know there is more */
    this._ahead = null;
    this._exhausted = false;
    /** @type {Task<P>[]} tasks to try again, before fresh parts; the latest first */
    this._retries = [];
    this._live = 0;
    /** attempts running now */
    this.running = 0;
    /** @type {Map<number, string>} slot -> provider of the activity it holds */
    this._held = new Map();
    /** @type {Map<string, number>} */
    this._failures = new Map();
    /** @type {Set<string>} providers the job passes over: every rent excludes them */
    this.banned = new Set();
    this._lastBan = "";
    /** no attempt starts: a task failed and ends the job, or the executor stopped it */
    this.stopped = false;
  }

  // --- what the executor asks ------------------------------------------------------------

  /** Parts read so far. */
  get read() {
    return this._read;
  }

  /** Every part read, and every task done or failed. */
  get finished() {
    return this._exhausted && this._ahead === null && this._live === 0;
  }

  /** Whether any slot holds an activity. */
  get holding() {
    return this._held.size > 0;
  }

  /** How many slots to run: one per provider, no more than tasks. @param {number} maxProviders */
  slots(maxProviders) {
    return this.total === null ? maxProviders : Math.min(maxProviders, this.total);
  }

  /** Whether a slot without an activity should rent one: a task waits (or may come). */
  wantsActivity() {
    return !this.stopped && (this._retries.length > 0 || this._peek() !== null);
  }

  /** More providers banned than a rent can exclude: nowhere is left to run the job. */
  tooManyBanned() {
    return this.banned.size > MAX_EXCLUDE;
  }

  /** Whether the activity on `provider` should wait for (or take) another task. @param {string} provider */
  mayServe(provider) {
    return !this.finished && !this.stopped && !this.banned.has(provider);
  }

  // --- slots -----------------------------------------------------------------------------

  /** `slot` rented `activity` on `provider`. @param {number} slot @param {string} provider @param {string} activity */
  hold(slot, provider, activity) {
    this._held.set(slot, provider);
    this._emit("rented", null, provider, activity);
  }

  /** `slot` released its activity: it may rent another. @param {number} slot @param {string} activity */
  free(slot, activity) {
    const provider = this._held.get(slot) ?? null;
    this._held.delete(slot);
    this._emit("released", null, provider, activity);
  }

  /** `provider` failed the job (lost it, or an activity in its setup): two failures ban it. @param {string} provider */
  providerFailed(provider) {
    const count = (this._failures.get(provider) ?? 0) + 1;
    this._failures.set(provider, count);
    if (count >= MAX_PROVIDER_FAILURES) this.ban(provider, `failed ${count} times`);
  }

  /** `provider` cannot run the job (its image is missing, its containers fail). @param {string} provider @param {string} why */
  ban(provider, why) {
    if (this.banned.has(provider)) return;
    this.banned.add(provider);
    this._lastBan = `the last, ${provider}: ${why}`;
    this._emit("provider_banned", null, provider, why);
  }

  /** Start no attempt from now on (the job ends: failed, cancelled, or out of budget). */
  stop() {
    this.stopped = true;
  }

  // --- tasks -----------------------------------------------------------------------------

  /**
   * The next task for the activity on `provider`; null: none for it now (wait for a change).
   * One that has not failed there, else a fresh part, else one that failed there when no
   * other provider the job holds is a better place.
   * @param {string} provider
   * @returns {Task<P> | null}
   */
  nextTask(provider) {
    if (!this.mayServe(provider)) return null;
    let at = this._retries.findIndex((task) => !task.failedOn.has(provider));
    if (at !== -1) return this._retries.splice(at, 1)[0];
    const fresh = this._peek();
    if (fresh !== null) {
      this._ahead = null;
      return fresh;
    }
    const holders = [...this._held.values()];
    at = this._retries.findIndex((task) => holders.every((p) => task.failedOn.has(p)));
    return at === -1 ? null : this._retries.splice(at, 1)[0];
  }

  /**
   * An attempt of `task` starts on `provider`; its number (1 for the first).
   * @param {Task<P>} task
   * @param {string} provider
   */
  start(task, provider) {
    this.running += 1;
    this.summary.attempts += 1;
    this._emit("task_started", task.index, provider, "");
    return task.errors.length + 1;
  }

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
  outcome(task, provider, outcome, error = null, detail = "") {
    this.running -= 1;
    if (outcome === "ok") {
      this._accept(task, provider);
      return { keep: true, failure: null };
    }
    if (outcome === "interrupted") {
      // Not the task's fault, nor the provider's: tried again, as if never started.
      this._retries.unshift(task);
      this._emit("task_retry", task.index, provider, INTERRUPTED);
      return { keep: true, failure: null };
    }
    task.errors.push(error);
    if (outcome === "error") return { keep: true, failure: this._fail(task, error, detail, provider) };
    task.failedOn.add(provider);
    if (outcome === "provider_lost") this.providerFailed(provider);
    else task.suspects.add(provider);
    const keep = outcome !== "provider_lost";
    if (task.errors.length <= this.retries) {
      this.summary.retries += 1;
      this._retries.unshift(task);
      this._emit("task_retry", task.index, provider, detail);
      return { keep, failure: null };
    }
    return { keep, failure: this._fail(task, error, detail, provider) };
  }

  /** An attempt no longer counts (the job ended under it, or its connection did). */
  abandon() {
    this.running -= 1;
  }

  /**
   * The task succeeded on `provider`. (Verification decides here whether it counts.)
   * @param {Task<P>} task
   * @param {string} provider
   */
  _accept(task, provider) {
    const done = this.summary.tasksPerProvider;
    done.set(provider, (done.get(provider) ?? 0) + 1);
    for (const suspect of [...task.suspects].sort()) {
      if (suspect !== provider) this.providerFailed(suspect); // the task is fine: where it failed, the provider was not
    }
    this.summary.succeeded += 1;
    this._live -= 1;
    this._emit("task_done", task.index, provider, "");
  }

  /**
   * @param {Task<P>} task
   * @param {unknown} cause
   * @param {string} detail
   * @param {string | null} provider
   * @param {string} [note]
   * @returns {Failure<P>}
   */
  _fail(task, cause, detail, provider, note = "") {
    this.summary.failed += 1;
    this._live -= 1;
    const message = `task ${task.index} failed after ${plural(task.errors.length, "attempt")}${note ? ` (${note})` : ""}: ${detail}`;
    const endsJob = !this.returnExceptions;
    if (endsJob) this.stopped = true; // no new rents nor attempts while the job winds down
    this._emit("task_failed", task.index, provider, message);
    return { task, message, cause, endsJob };
  }

  // --- no provider left ------------------------------------------------------------------

  /** Why no provider is left for the job: `why` and the providers the job passed over. @param {string} why */
  nowhereToRun(why) {
    const count = this.banned.size;
    return count > 0 ? `${why} (this job passed over ${plural(count, "provider")} that failed it; ${this._lastBan})` : why;
  }

  /** No task waiting has been tried yet: the job ends with a NoMatchError rather than TaskFailedError. */
  neverRan() {
    return !this.returnExceptions && !this._retries.some((task) => task.errors.length > 0);
  }

  /**
   * Fail every task waiting (those tried first, then the parts left): no provider is left to
   * run them. Lazily: stop at a failure that ends the job.
   * @param {unknown} cause
   * @param {string} detail
   * @returns {Generator<Failure<P>, void, void>}
   */
  *strand(cause, detail) {
    const waiting = [...this._retries.filter((t) => t.errors.length > 0), ...this._retries.filter((t) => t.errors.length === 0)];
    this._retries = [];
    const note = "no provider is left to run it";
    for (const task of waiting) yield this._fail(task, cause, detail, null, note);
    for (let fresh = this._peek(); fresh !== null; fresh = this._peek()) {
      this._ahead = null;
      yield this._fail(fresh, cause, detail, null, note);
    }
  }

  // --- reading the parts -----------------------------------------------------------------

  /** @returns {Task<P> | null} */
  _peek() {
    if (this._ahead === null && !this._exhausted) {
      const next = this._parts.next();
      if (next.done) {
        this._exhausted = true;
        this.total = this._read;
        this.summary.tasks = this._read;
        return null;
      }
      this._ahead = { index: this._read, item: next.value, errors: [], failedOn: new Set(), suspects: new Set() };
      this._read += 1;
      this._live += 1;
      if (this.total === null) this.summary.tasks = this._read;
      else if (this._read >= this.total) this._exhausted = true; // an array's last part: no need to ask for more
    }
    return this._ahead;
  }
}
