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

import { UsageError } from "./errors.js";
import { MICRO } from "./money.js";
import { MAX_EXCLUDE } from "./protocol/messages.js";

/** The most copies {@link Redundant} asks for (`2n - 1` runs must fit a verdict's `agreed`). */
export const MAX_REDUNDANCY = 8;
const STRANDED = "no provider is left to run it";
const SPENT = "the job's budget is spent";

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
export function sameResult(a, b) {
  if (Object.is(a, b)) return true;
  try {
    const left = JSON.stringify(a, contents);
    return left !== undefined && left === JSON.stringify(b, contents);
  } catch {
    return false; // a cycle: only the same value agrees
  }
}

/**
 * What JSON would lose, kept for the comparison: a Map's entries and a Set's values (JSON
 * writes both `{}`, so any two would agree), a non-finite number and a BigInt.
 * @param {string} _key @param {unknown} value
 */
function contents(_key, value) {
  if (value instanceof Map) return { "kiln:Map": [...value] };
  if (value instanceof Set) return { "kiln:Set": [...value] };
  if (typeof value === "number" && !Number.isFinite(value)) return { "kiln:number": String(value) };
  if (typeof value === "bigint") return { "kiln:bigint": String(value) };
  return value;
}

/**
 * Run each task on `n` distinct providers; accept a result when `n` of them agree
 * (`agree(a, b)`, default {@link sameResult}), with at most `2n - 1` runs (then the task is
 * disputed). `new Redundant(2)`.
 */
export class Redundant {
  /** @param {number} [n] @param {{agree?: Agree}} [options] */
  constructor(n = 2, { agree } = {}) {
    if (!Number.isInteger(n) || n < 2 || n > MAX_REDUNDANCY) {
      throw new UsageError(`Redundant(n) takes n from 2 to ${MAX_REDUNDANCY}, not ${JSON.stringify(n)}`);
    }
    if (agree !== undefined && typeof agree !== "function") throw new UsageError("agree must be a function (a, b) => boolean");
    this.n = n;
    /** @type {Agree | null} */
    this.agree = agree ?? null;
    Object.freeze(this);
  }

  /** The runs a task needs at the least. */
  get copies() {
    return this.n;
  }
}

/**
 * After a task's first result, run it again on another provider with probability `p`; a
 * disagreement is settled as by `Redundant(2)`. `new SpotCheck(0.1)`.
 */
export class SpotCheck {
  /** @param {number} p @param {{agree?: Agree}} [options] */
  constructor(p, { agree } = {}) {
    if (typeof p !== "number" || !(p >= 0 && p <= 1)) {
      throw new UsageError(`SpotCheck(p) takes a probability from 0 to 1, not ${JSON.stringify(p)}`);
    }
    if (agree !== undefined && typeof agree !== "function") throw new UsageError("agree must be a function (a, b) => boolean");
    this.p = p;
    /** @type {Agree | null} */
    this.agree = agree ?? null;
    Object.freeze(this);
  }

  get copies() {
    return this.p > 0 ? 2 : 1;
  }
}

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
export const MAX_PROVIDER_FAILURES = 2;
export const INTERRUPTED = "the connection to the hub dropped and is back";

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
    /** tasks accepted after their results were compared */
    this.verified = 0;
    /** tasks whose results disagreed */
    this.disputed = 0;
    /** @type {Map<string, number>} runs each provider lost against an agreeing majority */
    this.lostBy = new Map();
    /** @type {Map<string, number>} what the hub captured for the job's activities, per provider, in micro-credits */
    this.spentMicro = new Map();
  }

  /** What the job spent at the hub, in credits (as the hub's `cost` messages said). */
  get spent() {
    return [...this.spentMicro.values()].reduce((a, b) => a + b, 0) / MICRO;
  }

  /** What the job spent on each provider, in credits. @returns {Map<string, number>} */
  get spentByProvider() {
    return new Map([...this.spentMicro].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, micro]) => [p, micro / MICRO]));
  }

  /** The summary as text, one line for the job and one per provider (as Python's `lines()`). */
  lines() {
    const lines = [
      `tasks ${this.tasks}: ${this.succeeded} done, ${this.failed} failed; attempts ${this.attempts}, ` +
        `retries ${this.retries}; wall time ${this.wallSeconds.toFixed(2)} s`,
    ];
    if (this.verified || this.disputed) {
      const lost = [...this.lostBy].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, n]) => `${p} ${n}`).join(", ") || "none";
      lines.push(`verified ${this.verified}, disputed ${this.disputed}; runs lost: ${lost}`);
    }
    if (this.spentMicro.size > 0) lines.push(`spent ${this.spent} credits`);
    const providers = new Set([
      ...this.tasksPerProvider.keys(), ...this.cpuSeconds.keys(), ...this.spentMicro.keys(), ...this.lostBy.keys(),
    ]);
    for (const provider of [...providers].sort()) {
      const spent = this.spentMicro.get(provider) ?? 0;
      const lost = this.lostBy.get(provider) ?? 0;
      lines.push(
        `  ${provider}: ${this.tasksPerProvider.get(provider) ?? 0} tasks, ` +
          `${(this.cpuSeconds.get(provider) ?? 0).toFixed(2)} container CPU-seconds` +
          (spent ? `, ${spent / MICRO} credits` : "") +
          (lost ? `, lost ${plural(lost, "verification")}` : "") +
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
   * @param {{retries?: number, returnExceptions?: boolean, verify?: Verify | null, chance?: () => number}} [options]
   *   `chance` gives a float in [0, 1) for each spot check (default Math.random; the vectors fix its values)
   */
  constructor(parts, emit, { retries = 2, returnExceptions = false, verify = null, chance = Math.random } = {}) {
    this.retries = retries;
    this.returnExceptions = returnExceptions;
    this.verify = verify;
    /** @type {Agree} */
    this._agree = verify?.agree ?? sameResult;
    this._chance = chance;
    this._emit = emit;
    /** @type {number | null} how many tasks the job has, when the parts tell (null until a generator runs out) */
    this.total = Array.isArray(parts) ? parts.length : null;
    this.summary = new JobSummary(this.total ?? 0);
    this._parts = parts[Symbol.iterator]();
    this._read = 0;
    /** @type {Task<P> | null} the one part read to know there is more */
    this._ahead = null;
    this._exhausted = false;
    /** @type {Task<P>[]} tasks to try again or to run a copy of, before fresh parts; the latest first */
    this._retries = [];
    this._live = 0;
    /** attempts running now */
    this.running = 0;
    /** @type {Map<number, string>} slot -> provider of the activity it holds */
    this._held = new Map();
    /** @type {Map<string, string>} provider -> the activity the job holds there */
    this._activityOn = new Map();
    /** @type {Map<string, number>} */
    this._failures = new Map();
    /** @type {Set<string>} providers the job passes over: every rent excludes them */
    this.banned = new Set();
    this._lastBan = "";
    /** no attempt starts: a task failed and ends the job, or the executor stopped it */
    this.stopped = false;
    /** the job's budget is spent ({@link Scheduler#budgetExceeded}) */
    this.overBudget = false;
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

  /** How many slots to run: one per provider, no more than the runs the tasks need. @param {number} maxProviders */
  slots(maxProviders) {
    const copies = this.verify === null ? 1 : this.verify.copies;
    return this.total === null ? maxProviders : Math.min(maxProviders, this.total * copies);
  }

  /** Whether a slot without an activity should rent one: a task waits (or may come). */
  wantsActivity() {
    return !this.stopped && !this.overBudget && (this._retries.length > 0 || this._peek() !== null);
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
    this._activityOn.set(provider, activity);
    this._emit("rented", null, provider, activity);
  }

  /** `slot` released its activity: it may rent another. @param {number} slot @param {string} activity */
  free(slot, activity) {
    const provider = this._held.get(slot) ?? null;
    this._held.delete(slot);
    if (provider !== null && this._activityOn.get(provider) === activity) this._activityOn.delete(provider);
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

  /**
   * The hub refused a rent, or ended an activity, because the job's budget is spent: nothing
   * more is rented, the activities held go on serving; once none is held, `strand()` fails
   * the tasks not done.
   */
  budgetExceeded() {
    this.overBudget = true;
  }

  /**
   * Nothing the job holds can go on: no attempt runs, and no provider it holds may take a
   * task waiting (a copy wants a provider it lacks). Renting is then the only way on.
   */
  blocked() {
    if (this.running > 0 || this._peek() !== null) return false;
    const holders = this._serving();
    return !this._retries.some((task) => holders.some((p) => !task.busy.has(p)));
  }

  /**
   * Providers a new activity would be of no use on: every task waiting has run there or runs
   * there (none while a fresh part waits). A blocked slot gives its activity up and rents
   * again, excluding these.
   * @returns {Set<string>}
   */
  avoid() {
    if (this._retries.length === 0 || this._peek() !== null) return new Set();
    const [first, ...rest] = this._retries;
    return new Set([...first.busy].filter((p) => rest.every((task) => task.busy.has(p))));
  }

  /** The providers the job holds that may take tasks (not banned). */
  _serving() {
    return [...new Set(this._held.values())].filter((p) => !this.banned.has(p));
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
    const retry = this._retries.find((task) => !task.failedOn.has(provider) && !task.busy.has(provider));
    if (retry !== undefined) return this._take(retry, provider);
    const fresh = this._peek();
    if (fresh !== null) {
      this._ahead = null;
      if (this.verify instanceof Redundant) {
        fresh.needed = this.verify.n;
        this._want(fresh, this.verify.n - 1);
      }
      fresh.busy.add(provider);
      return fresh;
    }
    const holders = this._serving();
    const spared = this._retries.find(
      (task) => !task.busy.has(provider) && holders.every((p) => task.failedOn.has(p) || task.busy.has(p)),
    );
    return spared === undefined ? null : this._take(spared, provider);
  }

  /** Hand out one of the attempts `task` waits for, to `provider`. @param {Task<P>} task @param {string} provider */
  _take(task, provider) {
    task.busy.add(provider); // handed to it: no copy goes there
    task.wanted -= 1;
    if (task.wanted === 0) this._retries.splice(this._retries.indexOf(task), 1);
    return task;
  }

  /** Queue `attempts` more attempts of `task` (a retry, or copies), before fresh parts. @param {Task<P>} task */
  _want(task, attempts = 1) {
    if (task.wanted === 0) this._retries.unshift(task);
    task.wanted += attempts;
  }

  /** @param {Task<P>} task */
  _unqueue(task) {
    if (task.wanted > 0) {
      task.wanted = 0;
      this._retries.splice(this._retries.indexOf(task), 1);
    }
  }

  /**
   * An attempt of `task` starts on `provider`; its number (1 for the first).
   * @param {Task<P>} task
   * @param {string} provider
   */
  start(task, provider) {
    this.running += 1;
    this.summary.attempts += 1;
    task.running += 1;
    task.busy.add(provider);
    this._emit("task_started", task.index, provider, "");
    return task.errors.length + task.runs.length + task.running;
  }

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
  outcome(task, provider, outcome, error = null, detail = "", value = null) {
    this.running -= 1;
    task.running -= 1;
    task.busy.delete(provider);
    const keep = outcome !== "provider_lost";
    if (task.settled) return { keep, failure: null }; // a copy of a task accepted or failed meanwhile: it no longer counts
    if (outcome === "ok") return this._ran(task, { provider, activity: this._activityOn.get(provider) ?? "", value });
    if (outcome === "interrupted") {
      // Not the task's fault, nor the provider's: tried again, as if never started.
      this._want(task);
      this._emit("task_retry", task.index, provider, INTERRUPTED);
      return { keep: true, failure: null };
    }
    task.errors.push(error);
    if (outcome === "error") return { keep: true, failure: this._fail(task, error, detail, provider) };
    task.failedOn.add(provider);
    if (outcome === "provider_lost") this.providerFailed(provider);
    else task.suspects.add(provider);
    if (task.errors.length <= this.retries) {
      this.summary.retries += 1;
      this._want(task);
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
   * An attempt succeeded: the task is accepted, or waits for (or gets) more copies, or is disputed.
   * @param {Task<P>} task
   * @param {Run} run
   * @returns {Verdict<P>}
   */
  _ran(task, run) {
    const verify = this.verify;
    if (verify === null) {
      this._accept(task, run, []);
      return { keep: true, failure: null, accepted: run };
    }
    task.runs.push(run);
    task.busy.add(run.provider);
    if (verify instanceof SpotCheck && task.runs.length === 1 && task.needed === 1) {
      if (verify.p > 0 && this._chance() < verify.p) {
        task.needed = 2;
        this._want(task);
        return { keep: true, failure: null };
      }
      this._accept(task, run, []);
      return { keep: true, failure: null, accepted: run };
    }
    const agree = this._agree;
    const agreeing = task.runs.filter((r) => r === run || agree(r.value, run.value));
    if (agreeing.length < task.runs.length && !task.disputed) {
      task.disputed = true;
      this.summary.disputed += 1;
    }
    if (agreeing.length >= task.needed) {
      const first = agreeing[0];
      const lost = task.runs.filter((r) => r !== first && !agreeing.includes(r) && !agree(first.value, r.value));
      const agreed = agreeing.map((r) => r.activity);
      const disputes = lost.map((r) => ({ provider: r.provider, activity: r.activity, agreed: [...agreed] }));
      this._accept(task, first, disputes);
      return { keep: true, failure: null, accepted: first, disputes };
    }
    // No value has enough agreeing: run copies until one might, within 2 x needed - 1 runs.
    const best = Math.max(...task.runs.map((r) => task.runs.filter((s) => agree(r.value, s.value)).length));
    const coming = task.running + task.wanted;
    const more = Math.min(task.needed - best - coming, 2 * task.needed - 1 - task.runs.length - coming);
    if (more > 0) {
      this._want(task, more);
    } else if (coming === 0) {
      const why = `${plural(task.runs.length, "result")} on distinct providers, and no ${task.needed} agree`;
      return { keep: true, failure: this._fail(task, null, why, run.provider, "disputed") };
    }
    return { keep: true, failure: null };
  }

  /**
   * The task is done: `run`'s value is its result; the runs `disputes` name lost.
   * @param {Task<P>} task
   * @param {Run} run
   * @param {Dispute[]} disputes
   */
  _accept(task, run, disputes) {
    task.settled = true;
    this._unqueue(task);
    const summary = this.summary;
    summary.tasksPerProvider.set(run.provider, (summary.tasksPerProvider.get(run.provider) ?? 0) + 1);
    for (const dispute of disputes) {
      summary.lostBy.set(dispute.provider, (summary.lostBy.get(dispute.provider) ?? 0) + 1);
      this._emit("task_disputed", task.index, dispute.provider, `${dispute.activity} lost against ${dispute.agreed.join(", ")}`);
    }
    const ran = new Set(task.runs.map((r) => r.provider));
    const blamed = new Set([...task.suspects].filter((p) => !ran.has(p) && p !== run.provider));
    for (const dispute of disputes) blamed.add(dispute.provider);
    for (const suspect of [...blamed].sort()) {
      this.providerFailed(suspect); // the task is fine: where it failed or disagreed, the provider was not
    }
    if (task.runs.length > 1) {
      summary.verified += 1;
      this._emit("task_verified", task.index, run.provider, `${plural(task.needed, "result")} agree`);
    }
    summary.succeeded += 1;
    this._live -= 1;
    this._emit("task_done", task.index, run.provider, "");
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
    task.settled = true;
    this._unqueue(task);
    this.summary.failed += 1;
    this._live -= 1;
    const attempts = plural(task.errors.length + task.runs.length, "attempt");
    const message = `task ${task.index} failed after ${attempts}${note ? ` (${note})` : ""}: ${detail}`;
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
    return !this.returnExceptions && !this._retries.some((task) => task.errors.length > 0 || task.runs.length > 0);
  }

  /**
   * Fail every task waiting (those tried first, then the parts left): no provider is left to
   * run them, or the job's budget is spent. Lazily: stop at a failure that ends the job.
   * @param {unknown} cause
   * @param {string} detail
   * @returns {Generator<Failure<P>, void, void>}
   */
  *strand(cause, detail) {
    const tried = (/** @type {Task<P>} */ t) => t.errors.length > 0 || t.runs.length > 0;
    const waiting = [...this._retries.filter(tried), ...this._retries.filter((t) => !tried(t))];
    const note = this.overBudget ? SPENT : STRANDED;
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
      this._ahead = {
        index: this._read, item: next.value, errors: [], failedOn: new Set(), suspects: new Set(),
        runs: [], busy: new Set(), wanted: 0, running: 0, needed: 1, settled: false, disputed: false,
      };
      this._read += 1;
      this._live += 1;
      if (this.total === null) this.summary.tasks = this._read;
      else if (this._read >= this.total) this._exhausted = true; // an array's last part: no need to ask for more
    }
    return this._ahead;
  }
}
