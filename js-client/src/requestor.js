/**
 * The requestor: connect to a hub, rent activities from the market, release them
 * (`python/kiln/requestor/client.py`).
 *
 *     const requestor = await connect("ws://127.0.0.1:7465", { token });
 *     await requestor.pushImage("app.tar", { tags: ["app:1"] });   // `docker save app:1 > app.tar` (hub ≥ 1.1)
 *     const act = await requestor.rent({ image: "app:1", demand: { cpus: 1, memory: "256MiB" } });
 *     ...
 *     await requestor.close();   // releases every activity still held
 *
 * The hub destroys what a requestor held if its connection simply drops.
 * @module
 */

import { Activity } from "./activity.js";
import { Connection } from "./connection.js";
import { Deferred, cancelledBy, raceAbort, settlesWithin, throwIfAborted } from "./deferred.js";
import { LocalProtocolError, UsageError, errorFromCode } from "./errors.js";
import { Job } from "./executor.js";
import { parseSize } from "./units.js";

/** How long `close()` waits for the releases of abandoned rents. */
const CLEANUP_WAIT_MS = 10_000;

/**
 * What a platform supplies: how to open a WebSocket, and how to read and write local files.
 * @typedef {object} Platform
 * @property {import("./connection.js").OpenSocket} openSocket
 * @property {import("./activity.js").Files} files
 * @property {{open: (local: any) => Promise<import("./image.js").ImageArchive>}} images opens a `docker save`
 *   archive (Node: a path; a browser: a Blob or File); close it with `archive.file.close()`
 */

/** @typedef {import("../types/protocol.js").ImageInfo} ImageInfo */

/**
 * What a push did: the image stored (`digest` is Docker's image id), and the bytes sent
 * and the bytes the hub held already.
 * @typedef {object} PushedImage
 * @property {string} digest
 * @property {string[]} tags
 * @property {number} size bytes of its config and layers
 * @property {number} sentBytes
 * @property {number} skippedBytes
 * @property {ImageInfo} image as the hub's store holds it
 */

/**
 * How far a push's blobs have gone, or a rent's image has loaded on its provider: `done`
 * of `total` bytes (a rent's also names its `provider` and `image`).
 * @typedef {{done: number, total: number, provider?: string, image?: string}} Progress
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

/**
 * @typedef {object} ResourcesOptions
 * @property {number} [cpus] CPUs (fractions allowed), default 0
 * @property {number | string} [memory] bytes or e.g. "256MiB", default 0
 * @property {number | string} [storage] bytes or e.g. "1GiB", default 0
 */

/**
 * The wire form of an amount of capacity (a market's `free` filter); a UsageError for a bad size.
 * @param {ResourcesOptions} [resources]
 */
function resourcesMessage(resources = {}) {
  if (typeof resources !== "object" || resources === null) throw new UsageError("free must be an object");
  return {
    cpus: resources.cpus ?? 0,
    memory: parseSize(resources.memory ?? 0),
    storage: parseSize(resources.storage ?? 0),
  };
}

/** A live connection to the hub as a requestor. Get one from `connect()`. */
export class Requestor {
  /** @param {Connection} connection @param {Platform} platform */
  constructor(connection, platform) {
    this.connection = connection;
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
   * ImageNotFoundError when the chosen provider lacks the image (its `provider` names
   * it), CancelledError when `signal` fires first (the hub destroys the container if it
   * comes up after all). Providers named in `exclude` are passed over; the hub keeps the
   * live activities of one `group` (a name of the caller's) on distinct providers.
   *
   * `image` may name an image pushed to the hub's store (by tag or digest): a provider
   * that lacks it loads it from the hub first, and `onProgress({provider, image, done,
   * total})` hears how far (a hub ≥ 1.1 tells; the activity's `pulled` says how many
   * bytes it took, `cached` whether none were needed).
   *
   * `user: "root"` runs the activity's commands as root (still without capabilities,
   * privileges to gain or network), on a provider whose operator allows it (`kiln provider
   * --allow-root`): NoMatchError when none does, UnsupportedVersionError from a hub below
   * protocol 1.2. Without it, commands run as the image's USER, or nobody.
   * @param {{image: string, demand?: DemandOptions, exclude?: Iterable<string>, group?: string,
   *          user?: "root", signal?: AbortSignal, onProgress?: (progress: Required<Progress>) => void}} options
   * @returns {Promise<Activity>}
   */
  async rent(options) {
    const { image, signal } = options ?? {};
    if (typeof image !== "string") throw new UsageError("rent needs an image, e.g. { image: 'kiln-busybox:latest' }");
    const demand = demandMessage(options.demand);
    const exclude = [...new Set(options.exclude ?? [])].sort();
    const user = options.user ?? null;
    if (user !== null && user !== "root") throw new UsageError(`user may only be "root", not ${JSON.stringify(user)}`);
    throwIfAborted(signal, `renting ${image}`);
    const conn = this.connection;
    const id = conn.newId();
    const onProgress = options.onProgress;
    /** @type {import("./connection.js").OnInterim | undefined} */
    const onInterim =
      onProgress === undefined
        ? undefined
        : (info) => {
            if (info.type === "rent_progress") {
              onProgress({ provider: info.provider, image: info.image, done: info.done, total: info.total });
            }
          };
    const message = { type: "rent", id, image, demand, exclude, group: options.group ?? null, user };
    const reply = conn.request(message, onInterim);
    const rented = reply.then((message) => this._adopt(/** @type {import("../types/protocol.js").Rented} */ (message)));
    return raceAbort(rented, signal, `renting ${image}`, () => {
      conn.cancel(id);
      // Rented before the cancel arrived: release it here.
      this._releaseLater(rented);
    });
  }

  /** @param {import("../types/protocol.js").Rented} rented */
  _adopt(rented) {
    const activity = new Activity(this.connection, rented, this._platform.files, (a) => this._activities.delete(a.id));
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
   * The providers the hub knows (their offer, what is free now, the images they hold), by
   * name: only those holding `image`, carrying `labels` and with at least `free` capacity
   * left; at most `limit` (1 to 1000, default 100) of them.
   * @param {{image?: string, labels?: Record<string, string>, free?: ResourcesOptions, limit?: number}} [options]
   * @returns {Promise<import("../types/protocol.js").ProviderInfo[]>}
   */
  async market(options = {}) {
    const { image = null, labels = {}, limit = 100 } = options;
    const conn = this.connection;
    const query = { type: "market", id: conn.newId(), image, labels, free: resourcesMessage(options.free), limit };
    const reply = /** @type {import("../types/protocol.js").MarketInfo} */ (await conn.request(query));
    return reply.providers;
  }

  /**
   * Push the image in the `docker save` archive `local` (Node: a path; a browser: a Blob)
   * to the hub's image store, under its own tags (`RepoTags`) and `tags`; then rent it by
   * tag or digest. Only the blobs the hub lacks are sent, streamed from the archive (never
   * a layer whole in memory); `onProgress({done, total})` hears how far.
   *
   * Rejects with ImageError when `local` is not a `docker save` archive of one image (before
   * anything is sent), or the hub finds the image bad; ImageCorruptError when a blob's
   * bytes do not match its digest (blobs verified already are kept: pushing again
   * resumes); StoreFullError when the hub's store has no room; UsageError for a bad tag;
   * UnsupportedVersionError when the hub speaks protocol 1.0 (it has no store);
   * CancelledError when `signal` fires.
   * @param {any} local
   * @param {{tags?: string[], onProgress?: (progress: Progress) => void, signal?: AbortSignal}} [options]
   * @returns {Promise<PushedImage>}
   */
  async pushImage(local, options = {}) {
    const { onProgress, signal } = options;
    throwIfAborted(signal, "the push");
    const archive = await this._platform.images.open(local);
    const what = `the push of ${archive.file.name}`;
    try {
      const tags = [...new Set([...archive.tags, ...(options.tags ?? [])])];
      const conn = this.connection;
      const message = { type: "push_image", id: conn.newId(), manifest: archive.manifest, tags };
      /** @type {Deferred<import("../types/protocol.js").Want>} */
      const wanted = new Deferred();
      /** @type {ReturnType<import("./connection.js").Connection["openUpload"]>} */
      let push;
      try {
        push = conn.openUpload(message, (info) => {
          if (info.type === "want") wanted.resolve(info);
        });
      } catch (e) {
        if (e instanceof LocalProtocolError) throw new UsageError(`cannot push ${archive.file.name}: ${e.message}`, { cause: e });
        throw e;
      }
      const { sender, reply } = push;
      const onAbort = () => sender.fail(cancelledBy(/** @type {AbortSignal} */ (signal), what));
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        // The hub lacks nothing: image_pushed at once, no want.
        const first = await raceAbort(Promise.race([wanted.promise, reply.promise]), signal, what);
        if (first.type === "want") {
          const total = archive.bytesOf(first.blobs);
          let done = 0;
          onProgress?.({ done, total });
          for await (const chunk of archive.blobs(first.blobs, conn.session.limits.chunk_bytes)) {
            await sender.write(chunk);
            done += chunk.byteLength;
            onProgress?.({ done, total });
          }
          sender.end();
        }
        const pushed = /** @type {import("../types/protocol.js").ImagePushed} */ (await raceAbort(reply.promise, signal, what));
        return {
          digest: pushed.image.digest,
          tags: [...pushed.image.tags],
          size: pushed.image.size,
          sentBytes: pushed.sent,
          skippedBytes: pushed.skipped,
          image: pushed.image,
        };
      } catch (e) {
        if (!reply.settled) {
          // The abort ends a push under way; the cancel one the hub has not answered yet.
          sender.abort(e instanceof Error ? e.message : String(e));
          conn.cancel(message.id);
        }
        throw e;
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
    } finally {
      await archive.file.close();
    }
  }

  /**
   * The images in the hub's store, most recently used first, with the bytes the store
   * holds and its limit. UnsupportedVersionError from a hub of protocol 1.0.
   * @returns {Promise<{images: ImageInfo[], used: number, limit: number}>}
   */
  async listImages() {
    const conn = this.connection;
    const list = /** @type {import("../types/protocol.js").ImageList} */ (
      await conn.request({ type: "list_images", id: conn.newId() })
    );
    return { images: [...list.images], used: list.used, limit: list.limit };
  }

  /**
   * Remove an image (by tag or digest) from the hub's store. ImageNotFoundError when the
   * store lacks it; UnsupportedVersionError from a hub of protocol 1.0.
   * @param {string} ref
   */
  async removeImage(ref) {
    if (typeof ref !== "string") throw new UsageError("removeImage takes a tag or a digest");
    const conn = this.connection;
    await conn.request({ type: "remove_image", id: conn.newId(), image: ref });
  }

  /**
   * A job not started yet: follow its `events()` or `onEvent`, then `run()` it (see
   * `src/executor.js` for the semantics). Options: `image`, `demand`, `maxProviders` (4),
   * `retries` (2), `taskTimeoutMs`, `startTimeoutMs` (60 s), `setup`, `teardown`,
   * `returnExceptions`, `onEvent`, `signal`.
   * @template P, R
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {import("./executor.js").JobOptions} options
   * @returns {Job<P, R>}
   */
  job(parts, worker, options) {
    return new Job(this, parts, worker, options);
  }

  /**
   * Run `worker(activity, part, context)` for every part on rented activities and resolve
   * to the results in input order. Rejects with TaskFailedError when a task fails for good.
   * @template P, R
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {import("./executor.js").JobOptions} options
   * @returns {Promise<R[]>}
   */
  async map(parts, worker, options) {
    return this.job(parts, worker, options).run();
  }

  /**
   * Like {@link Requestor#map}, but yield `[index, result]` as each task finishes.
   * Stopping the iteration early ends the job and releases its activities.
   * @template P, R
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {import("./executor.js").JobOptions} options
   * @returns {AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>}
   */
  async *mapUnordered(parts, worker, options) {
    yield* this.job(parts, worker, options).results();
  }

  /** @param {import("../types/protocol.js").SessionEvent} event */
  _onEvent(event) {
    if (event.type === "notified" && event.message.type === "activity_lost") {
      const lost = event.message;
      const activity = this._activities.get(lost.activity);
      if (activity !== undefined) {
        this._activities.delete(lost.activity);
        activity.lost = errorFromCode(lost.code, lost.reason);
      }
    }
  }

  /** Release every activity still held and close the connection. */
  async close() {
    const held = [...this._activities.values()];
    await Promise.allSettled(held.map((a) => a.release()));
    await settlesWithin(Promise.allSettled([...this._cleanups]), CLEANUP_WAIT_MS);
    this._activities.clear();
    await this.connection.close();
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
  const connection = await Connection.open(platform.openSocket, url, {
    name: options.name ?? "requestor",
    token: options.token ?? null,
    timeoutMs: options.timeoutMs,
  });
  const requestor = new Requestor(connection, platform);
  connection.onEvent = (event) => requestor._onEvent(event);
  return requestor;
}
