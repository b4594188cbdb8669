/**
 * A service: a command kept running on N rented activities, checked for health, replaced when
 * it fails (`python/kiln/requestor/service.py`, whose docstring says the rules at length).
 *
 *     import { connect, Http } from "kiln-client";
 *     const svc = await requestor.service({
 *       image: "kiln-busybox:latest", demand: { cpus: 1, memory: "256MiB" },
 *       command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/golem/www"],
 *       ports: [8080], health: Http(8080, "/"), replicas: 2,
 *       setup: async (act) => act.sendBytes(new TextEncoder().encode("hi"), "/golem/www/index.html"),
 *     });
 *     const fwd = await svc.forward(8080, { localPort: 0 });   // Node: round robin over healthy replicas
 *     ...
 *     await svc.stop();
 *
 * Each replica is one activity, the replicas on distinct providers (one rent `group`):
 * rented, `setup(act)`, then its command runs with `stream` semantics until the service stops.
 * Health goes over `act.connect(port)` (`Tcp`: it connects; `Http`: a GET answers 2xx or
 * 3xx). A replica is healthy after its first passing check, and replaced on another provider
 * (rented excluding the one it leaves) when its provider is lost, `retries` checks in a row
 * fail, it is not healthy `startTimeoutMs` after its start, or its command keeps ending.
 * `restart`: "on-failure" (default) restarts a command that exits non-zero in place and stops
 * the replica when it exits 0; "always" restarts it whatever the code; "no" stops the replica.
 * A replica restarted in place {@link MAX_RESTARTS} times without a passing check is replaced.
 * A command or check that failed because the requestor's own connection to the hub dropped
 * waits for it to be back (up to {@link REJOIN_TIMEOUT_MS}) and restarts in place, not counted,
 * if the hub kept the activity; it is replaced if not.
 *
 * {@link Replica} is the state machine, pure (times are the caller's); {@link Service} does
 * the I/O around it.
 * @module
 */

import { sleep } from "./deferred.js";
import {
  ActivityError, ConnectionLostError, ConnectionRefusedError, KilnError, ProviderLostError, UsageError,
} from "./errors.js";

/** Restarts in place without a passing check between, after which the replica is replaced. */
export const MAX_RESTARTS = 3;
/** Activities a replica may go through before its first healthy check while the service starts. */
export const START_ATTEMPTS = 3;
/** The latest events `svc.events` keeps. */
export const EVENTS_KEPT = 1000;
/** The most of a reason an event carries. */
export const REASON_CHARS = 300;
/** Milliseconds between checks of a replica not yet healthy. */
export const FIRST_PROBES_MS = 200;
/** Milliseconds a replica whose command or check failed because the requestor's connection dropped
 * waits for it to be back (the SDK itself gives up after the hub's grace period), before it is replaced. */
export const REJOIN_TIMEOUT_MS = 60_000;
/** Milliseconds between two looks at the requestor's connection while it is away. */
const REJOIN_POLL_MS = 50;
const RENT_RETRY_FIRST_MS = 500;
const RENT_RETRY_MOST_MS = 10_000;
/** The most of an HTTP answer's first line a health check reads. */
const STATUS_LINE_LIMIT = 1024;
const RESTARTS = ["no", "on-failure", "always"];

/** @typedef {"no" | "on-failure" | "always"} Restart */
/** @typedef {"start" | "healthy" | "failure" | "replace" | "stop"} EventKind */
/** @typedef {"renting" | "starting" | "healthy" | "stopped"} ReplicaState */
/** @typedef {"keep" | "restart" | "replace" | "stop"} Action */
/**
 * @typedef {object} CheckOptions
 * @property {number} [intervalMs] between two checks of a healthy replica (default 1000)
 * @property {number} [timeoutMs] a check that takes longer fails (default 2000)
 * @property {number} [retries] failures in a row that replace a healthy replica (default 3)
 */
/**
 * A health check: {@link Tcp} or {@link Http}.
 * @typedef {Readonly<{kind: "tcp" | "http", port: number, path: string, intervalMs: number, timeoutMs: number, retries: number}>} HealthCheck
 */
/**
 * Something that happened to replica `replica` (0 to N-1) at `time` (ms since the epoch), as
 * Python's `ServiceEvent` says.
 * @typedef {Readonly<{kind: EventKind, replica: number, time: number, activity: string | null, provider: string | null, reason: string}>} ServiceEvent
 */

/**
 * @param {"tcp" | "http"} kind
 * @param {number} port
 * @param {string} path
 * @param {CheckOptions} options
 * @returns {HealthCheck}
 */
function check(kind, port, path, options) {
  const { intervalMs = 1000, timeoutMs = 2000, retries = 3 } = options;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`a health check's port is 1 to 65535, not ${port}`);
  if (!(intervalMs > 0) || !(timeoutMs > 0) || !Number.isInteger(retries) || retries < 1) {
    throw new UsageError("a health check's intervalMs and timeoutMs are positive, its retries at least 1");
  }
  if (typeof path !== "string" || !/^\/[\x21-\x7e]{0,1023}$/.test(path)) {
    throw new UsageError(`an Http check's path is a URL path like "/health" (no spaces), not ${JSON.stringify(path)}`);
  }
  return Object.freeze({ kind, port, path, intervalMs, timeoutMs, retries });
}

/**
 * A health check: `port` in the container accepts a connection.
 * @param {number} port
 * @param {CheckOptions} [options]
 * @returns {HealthCheck}
 */
export function Tcp(port, options = {}) {
  return check("tcp", port, "/", options);
}

/**
 * A health check: `GET path` on `port` answers 2xx or 3xx.
 * @param {number} port
 * @param {string} [path]
 * @param {CheckOptions} [options]
 * @returns {HealthCheck}
 */
export function Http(port, path = "/", options = {}) {
  return check("http", port, path, options);
}

/** @param {string} reason */
function clip(reason) {
  return reason.length <= REASON_CHARS ? reason : `${reason.slice(0, REASON_CHARS - 3)}...`;
}

/**
 * One replica's state machine: pure, fed what the I/O observed (at `now`, the caller's
 * monotonic milliseconds), answering an {@link Action} and the events to tell.
 */
export class Replica {
  /**
   * @param {number} index
   * @param {{restart: Restart, retries: number, startTimeoutMs: number, clock: [number, number]}} options
   *   `clock`: a monotonic reading and the epoch ms at the same moment (events are stamped by it)
   */
  constructor(index, { restart, retries, startTimeoutMs, clock }) {
    this.index = index;
    this.restart = restart;
    this.retries = retries;
    this.startTimeoutMs = startTimeoutMs;
    this._clock = clock;
    /** @type {ReplicaState} */
    this.state = "renting";
    /** @type {string | null} */
    this.activity = null;
    /** @type {string | null} */
    this.provider = null;
    /** @type {string | null} the provider it was last replaced from: the next rent excludes it */
    this.left = null;
    this.failures = 0;
    this.exits = 0;
    this.fruitless = 0;
    this.healthyOnce = false;
    this.restarts = 0;
    this.replacements = 0;
    this.since = 0;
  }

  /**
   * @param {EventKind} kind
   * @param {number} now
   * @param {string} [reason]
   * @returns {ServiceEvent}
   */
  _event(kind, now, reason = "") {
    const [mono, wall] = this._clock;
    return Object.freeze({
      kind,
      replica: this.index,
      time: wall + (now - mono),
      activity: this.activity,
      provider: this.provider,
      reason: clip(reason),
    });
  }

  /**
   * Its command started on `activity` (a new one, or the same after a restart).
   * @param {string} activity @param {string} provider @param {number} now @param {string} [reason]
   * @returns {ServiceEvent[]}
   */
  started(activity, provider, now, reason = "") {
    if (this.state === "stopped") return [];
    this.state = "starting";
    this.activity = activity;
    this.provider = provider;
    this.since = now;
    this.failures = 0;
    return [this._event("start", now, reason)];
  }

  /**
   * A health check ended: passed (`ok`) or failed for `reason`.
   * @param {boolean} ok @param {string} reason @param {number} now
   * @returns {[Action, ServiceEvent[]]}
   */
  checked(ok, reason, now) {
    if (this.state === "starting") {
      if (ok) {
        this.state = "healthy";
        this.exits = 0;
        this.fruitless = 0;
        this.healthyOnce = true;
        return ["keep", [this._event("healthy", now)]];
      }
      if (now - this.since >= this.startTimeoutMs) {
        return this._replace(`not healthy ${this.startTimeoutMs / 1000} s after its start: ${reason}`, now);
      }
      return ["keep", []];
    }
    if (this.state !== "healthy") return ["keep", []];
    if (ok) {
      this.failures = 0;
      return ["keep", []];
    }
    this.failures += 1;
    const events = [this._event("failure", now, `health check failed (${this.failures}/${this.retries}): ${reason}`)];
    if (this.failures < this.retries) return ["keep", events];
    const [action, more] = this._replace(`${this.failures} health checks failed in a row: ${reason}`, now);
    return [action, [...events, ...more]];
  }

  /**
   * Its command ended with `exitCode` (null: no code); `reason` its last words.
   * @param {number | null} exitCode @param {string} reason @param {number} now
   * @returns {[Action, ServiceEvent[]]}
   */
  exited(exitCode, reason, now) {
    if (this.state !== "starting" && this.state !== "healthy") return ["keep", []];
    const code = exitCode === null ? "no exit code" : `exit code ${exitCode}`;
    const why = `its command ended (${code})${reason ? `: ${reason}` : ""}`;
    const again = this.restart === "always" || (this.restart === "on-failure" && exitCode !== 0);
    if (!again) {
      this.state = "stopped";
      return ["stop", [this._event("stop", now, `${why}; restart="${this.restart}" does not restart it`)]];
    }
    const failure = this._event("failure", now, why);
    if (this.exits >= MAX_RESTARTS) {
      const [action, more] = this._replace(`${why}, after ${this.exits} restarts in place without a passing check`, now);
      return [action, [failure, ...more]];
    }
    this.exits += 1;
    this.restarts += 1;
    this.state = "renting";
    return ["restart", [failure]];
  }

  /**
   * Its command ended because the requestor's connection to the hub dropped, and the hub kept its
   * activity: it starts again in place, neither a failed check nor a restart towards {@link MAX_RESTARTS}.
   * @param {string} reason @param {number} now
   * @returns {[Action, ServiceEvent[]]}
   */
  interrupted(reason, now) {
    if (this.state !== "starting" && this.state !== "healthy") return ["keep", []];
    this.restarts += 1;
    this.state = "renting";
    return ["restart", [this._event("failure", now, `interrupted, restarted in place: ${reason}`)]];
  }

  /**
   * Its activity is gone (provider lost), or setting it up or starting its command failed.
   * @param {string} reason @param {number} now
   * @returns {[Action, ServiceEvent[]]}
   */
  lost(reason, now) {
    if (this.state === "stopped") return ["keep", []];
    return this._replace(reason, now, true);
  }

  /**
   * A rent for it failed: it stays `renting` and is rented again later.
   * @param {string} reason @param {number} now
   * @returns {ServiceEvent[]}
   */
  rentFailed(reason, now) {
    if (this.state === "stopped") return [];
    this.fruitless += 1;
    return [this._event("failure", now, `rent failed: ${reason}`)];
  }

  /**
   * The service stops it.
   * @param {string} reason @param {number} now
   * @returns {ServiceEvent[]}
   */
  stop(reason, now) {
    if (this.state === "stopped") return [];
    this.state = "stopped";
    return [this._event("stop", now, reason)];
  }

  /** Whether it went through {@link START_ATTEMPTS} activities or rents without ever being healthy. */
  get givenUp() {
    return !this.healthyOnce && this.fruitless >= START_ATTEMPTS;
  }

  /**
   * @param {string} reason @param {number} now @param {boolean} [failure]
   * @returns {[Action, ServiceEvent[]]}
   */
  _replace(reason, now, failure = false) {
    const events = failure ? [this._event("failure", now, reason)] : [];
    events.push(this._event("replace", now, reason));
    this.state = "renting";
    this.left = this.provider;
    this.activity = null;
    this.provider = null;
    this.failures = 0;
    this.exits = 0;
    this.fruitless += 1;
    this.replacements += 1;
    return ["replace", events];
  }
}

/** A service could not start: a replica never became healthy on {@link START_ATTEMPTS} activities. */
export class ServiceFailedError extends ActivityError {}

/**
 * Whether an HTTP status line says 2xx or 3xx, and if not why.
 * @param {string} line
 * @returns {[boolean, string]}
 */
export function statusOk(line) {
  const match = /^HTTP\/\d(?:\.\d)? (\d{3})(?:\s|$)/.exec(line);
  if (match === null) return [false, `not an HTTP answer: ${JSON.stringify(line.slice(0, 80))}`];
  const status = Number(match[1]);
  return status >= 200 && status < 400 ? [true, ""] : [false, `HTTP ${status}`];
}

/**
 * The options of `requestor.service()`.
 * @typedef {object} ServiceOptions
 * @property {string} image
 * @property {import("./requestor.js").DemandOptions} [demand]
 * @property {string[]} command run with `stream` semantics until the service stops
 * @property {number[]} [ports] those `forward` may carry (default: the health check's)
 * @property {HealthCheck} health `Http(port, path)` or `Tcp(port)`
 * @property {number} [replicas] (default 1)
 * @property {Restart} [restart] (default "on-failure")
 * @property {(act: import("./activity.js").Activity) => Promise<void>} [setup] put a new replica's inputs in
 * @property {Record<string, string>} [env] the command's environment
 * @property {(event: ServiceEvent) => void} [onEvent]
 * @property {number} [startTimeoutMs] a replica not healthy this long after its start is replaced (default 60000)
 */

/**
 * A replica as `svc.replicas` shows it.
 * @typedef {Readonly<{index: number, state: ReplicaState, activity: import("./activity.js").Activity | null, provider: string | null, restarts: number, replacements: number}>} ReplicaStatus
 */

const monotonic = () => performance.now();

/** Replicas of a command kept running and healthy. Get one from `requestor.service()`. */
export class Service {
  /**
   * @param {import("./requestor.js").Requestor} requestor
   * @param {ServiceOptions} options
   */
  constructor(requestor, options) {
    const { image, command, health, replicas = 1, restart = "on-failure", startTimeoutMs = 60_000 } = options ?? {};
    if (typeof image !== "string") throw new UsageError("a service needs an image");
    if (!Array.isArray(command) || command.length === 0 || !command.every((a) => typeof a === "string")) {
      throw new UsageError('a service\'s command is a non-empty list of strings, e.g. ["busybox", "httpd", "-f"]');
    }
    if (!Number.isInteger(replicas) || replicas < 1) throw new UsageError(`a service needs at least 1 replica, not ${replicas}`);
    if (!RESTARTS.includes(restart)) throw new UsageError(`restart is one of ${RESTARTS.join(", ")}, not ${restart}`);
    if (health === undefined || (health.kind !== "http" && health.kind !== "tcp")) {
      throw new UsageError("health is Http(port, path) or Tcp(port)");
    }
    if (!(startTimeoutMs > 0)) throw new UsageError("startTimeoutMs is positive");
    /** @type {number[]} */
    this.ports = [...(options.ports ?? [health.port])];
    for (const port of this.ports) Tcp(port);
    this._requestor = requestor;
    this._options = options;
    this._health = health;
    this._group = `service-${crypto.randomUUID().slice(0, 12)}`;
    /** @type {[number, number]} */
    const clock = [monotonic(), Date.now()];
    this._machines = Array.from(
      { length: replicas },
      (_, i) => new Replica(i, { restart, retries: health.retries, startTimeoutMs, clock }),
    );
    /** @type {(import("./activity.js").Activity | null)[]} */
    this._activities = this._machines.map(() => null);
    /** @type {unknown[]} the latest error `setup` threw for each replica */
    this._errors = this._machines.map(() => undefined);
    /** @type {Promise<void>[]} */
    this._tasks = [];
    /** @type {Set<() => void>} */
    this._waiters = new Set();
    this._turn = 0;
    /** @type {Set<{close: () => Promise<void>}>} */
    this._forwards = new Set();
    this._stopping = false;
    this._stopper = new AbortController();
    /** @type {ServiceEvent[]} what happened, oldest first (the latest {@link EVENTS_KEPT}) */
    this.events = [];
  }

  /** @returns {ReplicaStatus[]} each replica now, by index */
  get replicas() {
    return this._machines.map((m) =>
      Object.freeze({
        index: m.index,
        state: m.state,
        activity: this._activities[m.index],
        provider: m.provider,
        restarts: m.restarts,
        replacements: m.replacements,
      }),
    );
  }

  /** @returns {import("./activity.js").Activity[]} the activities of the replicas healthy now */
  healthy() {
    const out = [];
    for (const m of this._machines) {
      const act = this._activities[m.index];
      if (m.state === "healthy" && act !== null) out.push(act);
    }
    return out;
  }

  /** @returns {import("./activity.js").Activity[]} the healthy activities in the order a new connection tries them */
  pick() {
    const healthy = this.healthy();
    if (healthy.length === 0) return [];
    const first = this._turn++ % healthy.length;
    return [...healthy.slice(first), ...healthy.slice(0, first)];
  }

  /** @param {ServiceEvent[]} events */
  _note(events) {
    for (const event of events) {
      this.events.push(event);
      this._options.onEvent?.(event);
    }
    if (this.events.length > EVENTS_KEPT) this.events.splice(0, this.events.length - EVENTS_KEPT);
    if (events.length > 0) this._changed();
  }

  _changed() {
    for (const wake of this._waiters) wake();
    this._waiters.clear();
  }

  /** Why replica `index` last failed or stopped. @param {number} index */
  _lastReason(index) {
    const reasons = this.events.filter((e) => e.replica === index && (e.kind === "failure" || e.kind === "stop") && e.reason);
    return reasons.length ? reasons[reasons.length - 1].reason : "no reason known";
  }

  /**
   * Start every replica and wait until each is healthy; rejects with ServiceFailedError
   * (every replica stopped) when one never becomes healthy.
   * @returns {Promise<Service>}
   */
  async start() {
    this._tasks = this._machines.map((m) => this._keep(m));
    try {
      for (;;) {
        if (this._machines.every((m) => m.state === "healthy")) return this;
        const stuck = this._machines.filter((m) => m.givenUp || (m.state === "stopped" && !m.healthyOnce));
        if (stuck.length > 0) {
          const reasons = stuck.map((m) => `replica ${m.index}: ${this._lastReason(m.index)}`).join("; ");
          const cause = stuck.map((m) => this._errors[m.index]).find((e) => e !== undefined);
          throw new ServiceFailedError(`${stuck.length} replica(s) never became healthy: ${reasons}`, { cause });
        }
        await new Promise((resolve) => this._waiters.add(() => resolve(undefined)));
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** Stop every replica, release its activity, and close the service's forwards. Safe to call twice. */
  async stop() {
    if (this._stopping) return;
    this._stopping = true;
    for (const forward of [...this._forwards]) await forward.close();
    const now = monotonic();
    for (const m of this._machines) this._note(m.stop("the service stopped", now));
    this._stopper.abort();
    this._changed();
    await Promise.allSettled(this._tasks);
  }

  /** Sleep `ms`, or less when the service stops. @param {number} ms */
  async _pause(ms) {
    await sleep(ms, this._stopper.signal);
  }

  /** Keep replica `m` running until it stops: rent, set up, run, replace. @param {Replica} m */
  async _keep(m) {
    let wait = RENT_RETRY_FIRST_MS;
    const { image, demand } = this._options;
    while (m.state !== "stopped" && !m.givenUp && !this._stopping) {
      let act;
      try {
        act = await this._requestor.rent({
          image,
          demand,
          group: this._group,
          exclude: m.left === null ? [] : [m.left],
          signal: this._stopper.signal,
        });
      } catch (e) {
        if (this._stopping) return;
        if (!(e instanceof KilnError)) throw e;
        this._note(m.rentFailed(e.message, monotonic()));
        await this._pause(wait);
        wait = Math.min(wait * 2, RENT_RETRY_MOST_MS);
        continue;
      }
      wait = RENT_RETRY_FIRST_MS;
      this._activities[m.index] = act;
      try {
        await this._tend(m, act);
      } finally {
        this._activities[m.index] = null;
        this._changed();
        await act.release().catch(() => {});
      }
    }
  }

  /**
   * Set `act` up and run the command on it, again while `m` says restart.
   * @param {Replica} m @param {import("./activity.js").Activity} act
   */
  async _tend(m, act) {
    try {
      await this._options.setup?.(act);
    } catch (e) {
      this._errors[m.index] = e;
      this._note(m.lost(`setup failed: ${e instanceof Error ? e.message : String(e)}`, monotonic())[1]);
      return;
    }
    let reason = "";
    for (;;) {
      if (this._stopping) return;
      this._note(m.started(act.id, act.provider, monotonic(), reason));
      const stopCommand = new AbortController();
      const command = this._run(act, stopCommand.signal).then(
        (ended) => ({ ended, error: null }),
        (error) => ({ ended: null, error }),
      );
      let action;
      try {
        action = await this._watch(m, act, command);
      } finally {
        stopCommand.abort();
        await command;
      }
      if (action !== "restart") return;
      reason = this._lastReason(m.index);
    }
  }

  /**
   * Check `m`'s health while its command runs, until the machine asks for something.
   * @param {Replica} m @param {import("./activity.js").Activity} act
   * @param {Promise<{ended: {exitCode: number | null, last: string} | null, error: unknown}>} command
   * @returns {Promise<Action>}
   */
  async _watch(m, act, command) {
    /** @type {{ended: {exitCode: number | null, last: string} | null, error: unknown} | null} */
    let over = null;
    void command.then((o) => {
      over = o;
    });
    for (;;) {
      const interval = m.state === "starting" ? FIRST_PROBES_MS : this._health.intervalMs;
      await Promise.race([command, this._pause(interval)]);
      if (this._stopping) return "stop";
      if (over !== null) {
        const { ended, error } = /** @type {{ended: {exitCode: number | null, last: string} | null, error: unknown}} */ (over);
        let outcome;
        if (ended !== null) outcome = m.exited(ended.exitCode, ended.last, monotonic());
        else if (error instanceof ConnectionLostError && (await this._rejoin(act))) {
          outcome = m.interrupted(`the requestor's connection to the hub dropped: ${error.message}`, monotonic());
        } else if (error instanceof KilnError) outcome = m.lost(lostReason(act, error), monotonic());
        else throw error;
        this._note(outcome[1]);
        return outcome[0];
      }
      const conn = this._requestor.connection;
      const [ok, reason] = await probe(act, this._health);
      if (!ok && this._dropped(conn) && (await this._rejoin(act))) continue; // the connection failed it, not the replica
      const [action, events] =
        act.lost !== null ? m.lost(lostReason(act, act.lost), monotonic()) : m.checked(ok, reason, monotonic());
      this._note(events);
      if (action !== "keep") return action;
    }
  }

  /**
   * Whether the requestor's connection `conn` (the one of the moment a while ago) dropped since.
   * @param {import("./connection.js").Connection} conn
   */
  _dropped(conn) {
    const now = this._requestor.connection;
    return now !== conn || now.session.closed !== null || this._requestor.reconnecting;
  }

  /**
   * Wait until the requestor is connected to the hub again (up to {@link REJOIN_TIMEOUT_MS}):
   * whether it is and the hub kept `act`. It looks every {@link REJOIN_POLL_MS}, as a connection
   * may have dropped before the requestor begins to dial again.
   * @param {import("./activity.js").Activity} act
   * @returns {Promise<boolean>}
   */
  async _rejoin(act) {
    const deadline = monotonic() + REJOIN_TIMEOUT_MS;
    while (!this._stopping && act.lost === null && this._requestor.gone === null && monotonic() < deadline) {
      if (!this._requestor.reconnecting && this._requestor.connection.session.closed === null) return true;
      await this._pause(REJOIN_POLL_MS);
    }
    return false;
  }

  /**
   * Run the command until it ends: its exit code and the last line of its output.
   * @param {import("./activity.js").Activity} act @param {AbortSignal} signal
   * @returns {Promise<{exitCode: number | null, last: string}>}
   */
  async _run(act, signal) {
    let tail = "";
    for await (const event of act.stream(this._options.command, { env: this._options.env ?? {}, signal })) {
      if (event.kind === "exit") {
        const lines = tail.trim().split("\n");
        return { exitCode: event.result.exitCode, last: lines[lines.length - 1] ?? "" };
      }
      tail = (tail + event.text).slice(-REASON_CHARS);
    }
    return { exitCode: null, last: "" };
  }

  /**
   * (Node) Listen on `host:localPort` (0: a free port) and carry each connection accepted
   * there to `port` of a healthy replica, the next in turn (one that refuses: the next after
   * it). Resolves once listening to `{port, host, close()}`; `stop()` closes it too.
   * @param {number} port
   * @param {import("./ports.js").ForwardOptions} [options]
   * @returns {Promise<import("./ports.js").Forward>}
   */
  async forward(port, options = {}) {
    if (!this.ports.includes(port)) throw new UsageError(`port ${port} is not one of the service's ports ${this.ports}`);
    const listen = this._requestor._platform.ports?.forward ?? null;
    if (listen === null) throw new UsageError("forward listens on a local port: Node only (in a browser, use connect)");
    const carried = await listen(() => this._open(port), options);
    const forward = {
      port: carried.port,
      host: carried.host,
      close: async () => {
        this._forwards.delete(forward);
        await carried.close();
      },
    };
    this._forwards.add(forward);
    return forward;
  }

  /**
   * A connection to `port` of the next healthy replica that takes it.
   * @param {number} port
   * @returns {Promise<import("./ports.js").PortChannel>}
   */
  async _open(port) {
    let why = "no replica is healthy";
    for (const act of this.pick()) {
      try {
        return await act._channel(port, undefined);
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        why = `${act.provider}: ${e.message}`; // that replica refuses or just went: the next
      }
    }
    throw new ConnectionRefusedError(`no replica of the service took a connection to port ${port} (${why})`);
  }
}

/**
 * @param {import("./activity.js").Activity} act @param {KilnError} error
 */
function lostReason(act, error) {
  if (error instanceof ProviderLostError || act.lost !== null) {
    return `provider ${act.provider} lost: ${(act.lost ?? error).message}`;
  }
  return `its command failed: ${error.message}`;
}

/**
 * Check `health` once on `act`: whether it passed, and if not why. Works with Node's Duplex
 * and with the browser's socket object (`write()` and `read()` promises, `close()`).
 * @param {import("./activity.js").Activity} act
 * @param {HealthCheck} health
 * @returns {Promise<[boolean, string]>}
 */
export async function probe(act, health) {
  /** @type {any} */
  let sock = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve([false, `no answer within ${health.timeoutMs / 1000} s`]), health.timeoutMs);
  });
  const attempt = (async () => {
    sock = await act.connect(health.port);
    if (health.kind === "tcp") return [true, ""];
    const head = `GET ${health.path} HTTP/1.0\r\nHost: 127.0.0.1:${health.port}\r\nConnection: close\r\n\r\n`;
    await sock.write(new TextEncoder().encode(head));
    return statusOk(await readLine(sock));
  })().catch((e) => [false, e instanceof Error ? e.message : String(e)]);
  try {
    return /** @type {[boolean, string]} */ (await Promise.race([attempt, timeout]));
  } finally {
    clearTimeout(timer);
    void attempt.then(() => closeSocket(sock));
    closeSocket(sock);
  }
}

/** @param {any} sock */
function closeSocket(sock) {
  if (sock === null) return;
  if (typeof sock.destroy === "function") sock.destroy();
  else sock.close?.();
}

/**
 * The first line of what `sock` answers (at most {@link STATUS_LINE_LIMIT} bytes of it).
 * @param {any} sock
 * @returns {Promise<string>}
 */
async function readLine(sock) {
  const decoder = new TextDecoder();
  let text = "";
  /** @type {AsyncIterable<Uint8Array>} */
  const chunks =
    typeof sock[Symbol.asyncIterator] === "function"
      ? sock
      : (async function* () {
          for (;;) {
            const chunk = await sock.read();
            if (chunk === null || chunk === undefined) return;
            yield chunk;
          }
        })();
  for await (const chunk of chunks) {
    text += decoder.decode(chunk, { stream: true });
    const end = text.indexOf("\n");
    if (end >= 0) return text.slice(0, end).replace(/\r$/, "");
    if (text.length > STATUS_LINE_LIMIT) break;
  }
  return text.slice(0, STATUS_LINE_LIMIT);
}
