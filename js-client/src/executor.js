/**
 * `requestor.map()`: split, run, combine. Farm a worker over many parts on rented
 * activities and give the results back in input order (mirrors `python/kiln/executor.py`).
 *
 * A job rents up to `maxProviders` activities, one per provider (each rent excludes the
 * providers the job already holds), and feeds each one task after another: a container
 * per activity, not per task. `setup(act)` runs once per activity before its first
 * task, `teardown(act)` before its release.
 *
 * Failures: an attempt whose provider is lost, that runs past `taskTimeoutMs`, or whose
 * worker throws a RetryTaskError is tried again, at most `retries` more times, on another
 * provider when one is available. A provider that fails twice in a job gets no more of
 * its tasks. Any other error from the worker, or a task out of attempts, ends the job
 * with a TaskFailedError (with `returnExceptions: true`, that error is the task's result
 * instead). A lost hub connection ends it with the ConnectionClosedError, a fired
 * `signal` with a CancelledError. However the job ends, every activity it rented is
 * released before `map` settles.
 *
 * JavaScript cannot stop a running function: a timed-out attempt's `context.signal`
 * fires (pass it to `run`, `sendFile`, ...), and an activity whose worker has not
 * settled shortly after is released rather than reused.
 * @module
 */

import { Deferred, cancelledBy, sleep } from "./deferred.js";
import {
  ConnectionClosedError,
  KilnError,
  NoMatchError,
  ProviderLostError,
  RetryTaskError,
  TaskFailedError,
  TaskTimeoutError,
  UsageError,
} from "./errors.js";

const RENT_RETRY_MS = 500;
const MAX_PROVIDER_FAILURES = 2;
/** How long a timed-out worker may take to notice its signal before its activity is given up. */
const TIMEOUT_GRACE_MS = 2_000;
/** How long an ending job waits for its workers before releasing their activities anyway. */
const STOP_GRACE_MS = 5_000;

/**
 * @typedef {object} MapOptions
 * @property {string} image
 * @property {import("./requestor.js").DemandOptions} [demand]
 * @property {number} [maxProviders] most activities (one per provider) at once, default 4
 * @property {number} [retries] more attempts a task gets after its first, default 2
 * @property {number} [taskTimeoutMs] the most one attempt may take, default no limit
 * @property {number} [startTimeoutMs] how long to wait for a first provider, default 60 s
 * @property {(activity: import("./activity.js").Activity) => Promise<void>} [setup]
 * @property {(activity: import("./activity.js").Activity) => Promise<void>} [teardown]
 * @property {boolean} [returnExceptions] a task that fails for good yields its TaskFailedError
 * @property {AbortSignal} [signal]
 */

/**
 * What a worker gets besides its activity and part.
 * @typedef {object} TaskContext
 * @property {number} index the part's position in the input
 * @property {number} attempt 1 for the first attempt, 2 for the first retry, ...
 * @property {AbortSignal} signal fires when the attempt times out or the job ends; pass it on
 */

/**
 * @template P
 * @typedef {{index: number, item: P, errors: unknown[], failedOn: Set<string>}} Task
 */

/**
 * @template P, R
 * @param {import("./requestor.js").Requestor} requestor
 * @param {P[]} parts
 * @param {(activity: import("./activity.js").Activity, part: P, context: TaskContext) => Promise<R>} worker
 * @param {MapOptions} options
 * @returns {Promise<R[]>}
 */
export async function mapTasks(requestor, parts, worker, options) {
  if (typeof worker !== "function") throw new UsageError("map needs a worker: async (activity, part, context) => result");
  if (typeof options?.image !== "string") throw new UsageError("map needs options.image");
  const job = new Job(requestor, parts, worker, options);
  return job.run();
}

/** @template P, R */
class Job {
  /**
   * @param {import("./requestor.js").Requestor} requestor
   * @param {P[]} parts
   * @param {(activity: import("./activity.js").Activity, part: P, context: TaskContext) => Promise<R>} worker
   * @param {MapOptions} options
   */
  constructor(requestor, parts, worker, options) {
    this.maxProviders = options.maxProviders ?? 4;
    this.retries = options.retries ?? 2;
    if (!Number.isInteger(this.maxProviders) || this.maxProviders < 1) {
      throw new UsageError("maxProviders must be an integer of at least 1");
    }
    if (!Number.isInteger(this.retries) || this.retries < 0) throw new UsageError("retries cannot be negative");
    if (options.taskTimeoutMs !== undefined && !(options.taskTimeoutMs > 0)) {
      throw new UsageError("taskTimeoutMs must be a positive number of milliseconds");
    }
    this.requestor = requestor;
    this.worker = worker;
    this.options = options;
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
    /** @type {Task<P>[]} */
    this.tasks = parts.map((item, index) => ({ index, item, errors: [], failedOn: new Set() }));
    /** @type {Task<P>[]} waiting for an activity, retries first */
    this.pending = [...this.tasks];
    /** @type {(R | TaskFailedError)[]} */
    this.results = new Array(parts.length);
    this.remaining = parts.length;
    /** @type {Map<number, string>} slot -> provider of the activity it holds */
    this.held = new Map();
    /** @type {Set<import("./activity.js").Activity>} rented and not yet released */
    this.activities = new Set();
    /** @type {Map<string, number>} */
    this.failures = new Map();
    /** @type {Set<string>} */
    this.banned = new Set();
    /** @type {Deferred<void>} */
    this.changed = new Deferred();
    /** one rent at a time, so each sees what the others got: one activity per provider */
    this.renting = Promise.resolve();
    /** fires when the job ends: every rent and attempt follows it */
    this.stop = new AbortController();
    /** @type {unknown} */
    this.failure = null;
  }

  async run() {
    const { signal } = this.options;
    if (signal?.aborted) throw cancelledBy(signal, "map");
    const onAbort = () => this.fail(cancelledBy(/** @type {AbortSignal} */ (signal), "map"));
    signal?.addEventListener("abort", onAbort, { once: true });
    const count = Math.min(this.maxProviders, this.tasks.length);
    const slots = Array.from({ length: count }, (_, i) => this.slot(i).catch((e) => this.fail(e)));
    const all = Promise.allSettled(slots);
    try {
      await Promise.race([all, new Promise((resolve) => this.stop.signal.addEventListener("abort", resolve))]);
      if (this.stop.signal.aborted) await Promise.race([all, sleep(STOP_GRACE_MS)]);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.stop.abort(new KilnError("the map is over"));
      this.notify();
      // Slots release their own activities; these are the ones a stuck worker still holds.
      await Promise.allSettled([...this.activities].map((a) => this.release(a)));
    }
    if (this.failure !== null) throw this.failure;
    return /** @type {R[]} */ (this.results);
  }

  /** End the job with `error` (the first one wins). @param {unknown} error */
  fail(error) {
    if (this.stop.signal.aborted) return;
    this.failure = error;
    this.stop.abort(error);
    this.notify();
  }

  notify() {
    const changed = this.changed;
    this.changed = new Deferred();
    changed.resolve();
  }

  /** Wait for a change (or `ms` to pass, or the job to end). @param {number} ms */
  async changes(ms) {
    await Promise.race([this.changed.promise, sleep(ms)]);
  }

  get stopped() {
    return this.stop.signal.aborted;
  }

  /** @param {number} slot */
  async slot(slot) {
    while (this.remaining > 0 && !this.stopped) {
      const activity = await this.acquire(slot);
      if (activity === null) return;
      try {
        await this.serve(activity);
      } finally {
        this.held.delete(slot);
        this.notify();
        await this.release(activity);
      }
    }
  }

  /**
   * Rent an activity on a provider this job does not use yet (null: nothing left to do).
   * @param {number} slot
   */
  async acquire(slot) {
    const waitingSince = Date.now();
    while (this.remaining > 0 && !this.stopped) {
      if (this.pending.length === 0) {
        await this.changes(RENT_RETRY_MS * 4);
        continue;
      }
      const turn = this.renting;
      /** @type {() => void} */
      let done = () => {};
      this.renting = new Promise((resolve) => (done = () => resolve(undefined)));
      try {
        await turn;
        if (this.stopped) return null;
        const exclude = [...this.held.values(), ...this.banned];
        const activity = await this.requestor.rent({
          image: this.options.image,
          demand: this.options.demand,
          exclude,
          signal: this.stop.signal,
        });
        this.activities.add(activity);
        this.held.set(slot, activity.provider);
        return activity;
      } catch (e) {
        if (this.stopped) return null;
        if (e instanceof ProviderLostError) continue; // it vanished while starting our container
        if (!(e instanceof NoMatchError)) throw e;
        if (this.held.size > 0) {
          await this.changes(RENT_RETRY_MS * 4); // others are working: wait for a change
          continue;
        }
        if (Date.now() - waitingSince > this.startTimeoutMs) {
          throw new NoMatchError(`no provider for this job after ${this.startTimeoutMs} ms: ${e.message}`, { cause: e });
        }
        await this.changes(RENT_RETRY_MS);
      } finally {
        done();
      }
    }
    return null;
  }

  /** @param {import("./activity.js").Activity} activity */
  async release(activity) {
    if (!this.activities.delete(activity)) return;
    const { teardown } = this.options;
    if (teardown !== undefined && activity.lost === null && !activity.released && !this.stopped) {
      await teardown(activity).catch(() => {});
    }
    await activity.release().catch(() => {});
  }

  /** @param {import("./activity.js").Activity} activity */
  async serve(activity) {
    const provider = activity.provider;
    if (this.options.setup !== undefined) {
      try {
        await this.options.setup(activity);
      } catch (e) {
        if (!(e instanceof ProviderLostError)) throw e;
        this.providerFailed(provider);
        return;
      }
    }
    for (;;) {
      const task = await this.nextTask(provider);
      if (task === null) return;
      const healthy = await this.attempt(task, activity);
      if (!healthy || this.banned.has(provider) || activity.lost !== null || this.stopped) return;
    }
  }

  /**
   * The next task for `provider`: one that has not failed there, or one that failed
   * there but has no better place among the providers this job holds.
   * @param {string} provider
   */
  async nextTask(provider) {
    while (this.remaining > 0 && !this.banned.has(provider) && !this.stopped) {
      let at = this.pending.findIndex((task) => !task.failedOn.has(provider));
      if (at === -1) {
        const holders = [...this.held.values()];
        at = this.pending.findIndex((task) => holders.every((p) => task.failedOn.has(p)));
      }
      if (at !== -1) return this.pending.splice(at, 1)[0];
      await this.changes(RENT_RETRY_MS * 4);
    }
    return null;
  }

  /**
   * Run one attempt of `task`; false when the activity should be given up.
   * @param {Task<P>} task
   * @param {import("./activity.js").Activity} activity
   */
  async attempt(task, activity) {
    const provider = activity.provider;
    const attempt = new AbortController();
    const follow = () => attempt.abort(this.stop.signal.reason);
    this.stop.signal.addEventListener("abort", follow, { once: true });
    const timeoutMs = this.options.taskTimeoutMs;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    /** @type {Promise<never>} */
    const timedOut = new Promise((_, reject) => {
      if (timeoutMs === undefined) return;
      timer = setTimeout(() => {
        const error = new TaskTimeoutError(`attempt ran past taskTimeoutMs=${timeoutMs} on ${provider}`);
        attempt.abort(error);
        reject(error);
      }, timeoutMs);
    });
    const context = { index: task.index, attempt: task.errors.length + 1, signal: attempt.signal };
    const running = Promise.resolve().then(() => this.worker(activity, task.item, context));
    running.catch(() => {}); // seen below, or abandoned after a timeout
    /** @type {unknown} */
    let retryable;
    let healthy = true;
    try {
      const value = await Promise.race([running, timedOut]);
      if (this.stopped) return false;
      this.results[task.index] = value;
      this.done();
      return true;
    } catch (e) {
      if (this.stopped) return false;
      if (e instanceof TaskTimeoutError) {
        retryable = e;
        // Reuse the activity only if the worker let go of it when its signal fired.
        healthy = await Promise.race([running.then(() => true, () => true), sleep(TIMEOUT_GRACE_MS).then(() => false)]);
      } else if (e instanceof ProviderLostError || e instanceof RetryTaskError) {
        retryable = e;
        healthy = !(e instanceof ProviderLostError);
      } else if (e instanceof ConnectionClosedError) {
        throw e; // the hub is gone: nothing to retry on
      } else {
        task.errors.push(e);
        this.finish(task, e, false);
        return true;
      }
    } finally {
      clearTimeout(timer);
      this.stop.signal.removeEventListener("abort", follow);
    }
    task.errors.push(retryable);
    task.failedOn.add(provider);
    this.providerFailed(provider);
    this.finish(task, retryable, true);
    return healthy;
  }

  done() {
    this.remaining -= 1;
    this.notify();
    if (this.remaining === 0) this.stop.abort(new KilnError("the map is done"));
  }

  /**
   * @param {Task<P>} task
   * @param {unknown} error
   * @param {boolean} retry
   */
  finish(task, error, retry) {
    if (retry && task.errors.length <= this.retries) {
      this.pending.unshift(task);
      this.notify();
      return;
    }
    const attempts = task.errors.length;
    const name = error instanceof Error ? error.name : typeof error;
    const failure = new TaskFailedError(
      `task ${task.index} failed after ${attempts} attempt${attempts === 1 ? "" : "s"}: ${name}: ${describe(error)}`,
      { index: task.index, item: task.item, attempts: [...task.errors] },
    );
    if (!this.options.returnExceptions) throw failure;
    this.results[task.index] = failure;
    this.done();
  }

  /** @param {string} provider */
  providerFailed(provider) {
    const count = (this.failures.get(provider) ?? 0) + 1;
    this.failures.set(provider, count);
    if (count >= MAX_PROVIDER_FAILURES) this.banned.add(provider);
  }
}

/** @param {unknown} e */
const describe = (e) => (e instanceof Error ? e.message : String(e));
