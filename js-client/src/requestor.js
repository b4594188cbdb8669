/**
 * The requestor: connect to a hub, rent activities from the market, release them
 * (`python/kiln/requestor.py`).
 *
 *     const requestor = await connect("ws://127.0.0.1:7465", { token });
 *     const act = await requestor.rent({ image: "kiln-busybox:latest", demand: { cpus: 1, memory: "256MiB" } });
 *     ...
 *     await requestor.close();   // releases every activity still held
 *
 * The hub destroys what a requestor held if its connection simply drops.
 * @module
 */

import { Activity } from "./activity.js";
import { raceAbort, sleep, throwIfAborted } from "./deferred.js";
import { Endpoint } from "./endpoint.js";
import { UsageError, errorFromCode } from "./errors.js";
import { mapTasks } from "./executor.js";
import { parseSize } from "./units.js";

/**
 * What a platform supplies: how to open a WebSocket, and how to read and write local files.
 * @typedef {object} Platform
 * @property {import("./endpoint.js").OpenSocket} openSocket
 * @property {import("./activity.js").Files} files
 */

/**
 * @typedef {object} DemandOptions
 * @property {number} [cpus] at least this many CPUs (fractions allowed), default 1
 * @property {number | string} [memory] bytes or e.g. "256MiB", default 256MiB
 * @property {number | string} [storage] bytes or e.g. "1GiB", default 0
 * @property {Record<string, string>} [labels] labels the provider must carry exactly
 */

/**
 * The wire form of a demand; a UsageError for a bad value.
 * @param {DemandOptions} [demand]
 */
export function demandMessage(demand = {}) {
  if (typeof demand !== "object" || demand === null) throw new UsageError("demand must be an object");
  const cpus = demand.cpus ?? 1;
  if (typeof cpus !== "number" || !(cpus > 0) || cpus > 4096) {
    throw new UsageError(`cpus must be a positive number, not ${JSON.stringify(cpus)}`);
  }
  return {
    cpus,
    memory: parseSize(demand.memory ?? "256MiB"),
    storage: parseSize(demand.storage ?? 0),
    labels: { ...(demand.labels ?? {}) },
  };
}

/** A live connection to the hub as a requestor. Get one from `connect()`. */
export class Requestor {
  /** @param {Endpoint} endpoint @param {Platform} platform */
  constructor(endpoint, platform) {
    this.endpoint = endpoint;
    this._platform = platform;
    /** @type {Map<string, Activity>} */
    this._activities = new Map();
    /** @type {Set<Promise<void>>} releases of activities whose rent was abandoned */
    this._cleanups = new Set();
  }

  /** The activities this requestor holds now. */
  get activities() {
    return [...this._activities.values()];
  }

  /**
   * Rent a container of `image` on a provider meeting `demand`; release it with
   * `act.release()` (or `requestor.close()`).
   *
   * Rejects with NoMatchError naming the constraint no provider meets,
   * ImageNotFoundError when the chosen provider lacks the image, CancelledError when
   * `signal` fires first (the hub destroys the container if it comes up after all).
   * Providers named in `exclude` are passed over.
   * @param {{image: string, demand?: DemandOptions, exclude?: Iterable<string>, signal?: AbortSignal}} options
   * @returns {Promise<Activity>}
   */
  async rent(options) {
    const { image, signal } = options ?? {};
    if (typeof image !== "string") throw new UsageError("rent needs an image, e.g. { image: 'kiln-busybox:latest' }");
    const demand = demandMessage(options.demand);
    const exclude = [...new Set(options.exclude ?? [])].sort();
    throwIfAborted(signal, `renting ${image}`);
    const ep = this.endpoint;
    const id = ep.newId();
    const reply = ep.expect(id);
    ep.send({ type: "rent", id, image, demand, exclude });
    const rented = reply.promise.then((message) => this._adopt(/** @type {any} */ (message)));
    // Forgotten only once answered: an abandoned rent's answer must still arrive.
    rented.finally(() => ep.forget(id)).catch(() => {});
    return raceAbort(rented, signal, `renting ${image}`, () => {
      try {
        ep.send({ type: "cancel", target: id });
      } catch {
        // the connection is gone, and the hub destroys what it held
      }
      // Rented before the cancel arrived: release it here.
      this._releaseLater(rented);
    });
  }

  /** @param {import("../types/protocol.js").Rented} rented */
  _adopt(rented) {
    const activity = new Activity(this.endpoint, rented, this._platform.files, (a) => this._activities.delete(a.id));
    this._activities.set(activity.id, activity);
    return activity;
  }

  /** Release the activity `pending` resolves to, whenever it does; `close()` waits for it. @param {Promise<Activity>} pending */
  _releaseLater(pending) {
    const cleanup = pending.then(
      (activity) => activity.release().catch(() => {}),
      () => {},
    );
    this._cleanups.add(cleanup);
    cleanup.finally(() => this._cleanups.delete(cleanup));
  }

  /**
   * Every provider the hub knows: its offer, what is free now, the images it holds.
   * @returns {Promise<import("../types/protocol.js").ProviderInfo[]>}
   */
  async market() {
    const ep = this.endpoint;
    const reply = /** @type {import("../types/protocol.js").MarketInfo} */ (
      await ep.request({ type: "market", id: ep.newId() })
    );
    return reply.providers;
  }

  /**
   * Run `worker(activity, part, context)` for every part on rented activities and resolve
   * to the results in input order. See `MapOptions` in the types for the semantics.
   * @template P, R
   * @param {Iterable<P>} parts
   * @param {(activity: Activity, part: P, context: import("./executor.js").TaskContext) => Promise<R>} worker
   * @param {import("./executor.js").MapOptions} options
   * @returns {Promise<R[]>}
   */
  map(parts, worker, options) {
    return mapTasks(this, [...parts], worker, options);
  }

  /** @param {import("../types/protocol.js").Message} message */
  _onMessage(message) {
    if (message.type === "activity_lost") {
      const activity = this._activities.get(message.activity);
      if (activity !== undefined) {
        this._activities.delete(message.activity);
        activity.lost = errorFromCode(message.code, message.reason);
      }
    }
  }

  /** Release every activity still held and close the connection. */
  async close() {
    const held = [...this._activities.values()];
    await Promise.allSettled(held.map((a) => a.release()));
    await Promise.race([Promise.allSettled([...this._cleanups]), sleep(10_000)]);
    this._activities.clear();
    await this.endpoint.close();
  }
}

/**
 * Connect to the hub at `url` as a requestor.
 * @param {Platform} platform
 * @param {string} url
 * @param {{token?: string, name?: string, timeoutMs?: number}} [options]
 * @returns {Promise<Requestor>}
 */
export async function connectWith(platform, url, options = {}) {
  /** @type {Requestor | null} */
  let requestor = null;
  const endpoint = await Endpoint.open(platform.openSocket, url, {
    name: options.name ?? "requestor",
    token: options.token ?? null,
    timeoutMs: options.timeoutMs,
    onMessage: (message) => requestor?._onMessage(message),
  });
  requestor = new Requestor(endpoint, platform);
  return requestor;
}
