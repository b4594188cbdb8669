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
 * If the connection drops, the requestor dials again (protocol 1.2) for as long as the hub
 * holds its activities (the `grace` its welcome announced, `kiln hub --grace`): requests
 * under way fail with ConnectionLostError, the activities the hub kept go on working, and
 * those it did not are marked `lost`. When no reconnect succeeds in time, every activity
 * is lost and every further call rejects with ConnectionLostError.
 *
 * A market of several hubs (on one database) is given as an array, or as one string with
 * commas: the requestor joins the first that answers, and when its hub dies it dials that
 * one first, then each other in turn (`HubRing`); `requestor.url` says which hub it is on.
 *
 *     const requestor = await connect(["ws://hub-a:7465", "ws://hub-b:7465"]);   // or "ws://hub-a:7465,ws://hub-b:7465"
 * @module
 */

import { Activity } from "./activity.js";
import { Connection, HubRing } from "./connection.js";
import { Deferred, cancelledBy, raceAbort, settlesWithin, sleep, throwIfAborted } from "./deferred.js";
import {
  ConnectionClosedError,
  ConnectionLostError,
  KilnError,
  LocalProtocolError,
  NoMatchError,
  UsageError,
  errorFromCode,
} from "./errors.js";
import { Job, workerAndParts } from "./executor.js";
import { marketFields } from "./market.js";
import { credits, priceMessage, within, worstCase } from "./money.js";
import { MAX_LISTED } from "./protocol/generated/limits.js";
import { clip } from "./protocol/messages.js";
import { State } from "./protocol/session.js";
import { MAX_REASON, MAX_TASK_ATTEMPT } from "./report.js";
import { Service } from "./service.js";
import { parseSize } from "./units.js";

/** How long `close()` waits for the releases of abandoned rents. */
const CLEANUP_WAIT_MS = 10_000;
/** Milliseconds between two dials of a reconnect: from the first, doubling up to the most. */
const REDIAL_FIRST_MS = 200;
const REDIAL_MOST_MS = 2_000;
/** Activities released or lost that a requestor still knows, for the hub's final `cost` of each. */
const ENDED_KEPT = 1024;
/** The minor version from which a hub takes `task` reports. */
const TASK_REPORTS = 6;

/**
 * What a `task` report says (1.6; see {@link Requestor#reportTask}).
 * @typedef {object} TaskReportFields
 * @property {string} group the job's group (its rents name it)
 * @property {number} task the task's index
 * @property {number} attempt 1 for its first attempt
 * @property {"started" | "done" | "retried" | "failed"} state
 * @property {string} [activity] where it ran
 * @property {string} [reason] why it ended
 * @property {number} [bytes] bytes it moved
 */

/**
 * Dial the hub at `url` again, resuming the session of this secret (`hello.resume`), within
 * `timeoutMs`; the signal gives the dial up.
 * @typedef {(url: string, resume: string, timeoutMs: number, signal: AbortSignal) => Promise<Connection>} Dial
 */

/**
 * What a platform supplies: how to open a WebSocket, and how to read and write local files.
 * @typedef {object} Platform
 * @property {import("./connection.js").OpenSocket} openSocket
 * @property {import("./activity.js").Files} files
 * @property {import("./ports.js").Ports} [ports] how a connection to a container's port is presented
 *   (Node: a Duplex, and forwarding; default: a PortSocket)
 * @property {{open: (local: any) => Promise<import("./image.js").ImageArchive>}} images opens a `docker save`
 *   archive (Node: a path; a browser: a Blob or File); close it with `archive.file.close()`
 */

/** @typedef {import("../types/protocol.js").ActivityInfo} ActivityInfo */

/**
 * An image in the hub's store, as the JS API gives it (the wire's `image_info` with
 * camelCase names, like the rest of the API).
 * @typedef {object} ImageInfo
 * @property {string} digest Docker's image id (`sha256:…`)
 * @property {string[]} tags
 * @property {number} size bytes of its config and layers
 * @property {number} layers
 * @property {string} arch
 * @property {string} os
 * @property {number} pushed when it was pushed (the hub's clock, Unix seconds)
 * @property {number | null} lastUsed when an activity last ran it (null: never)
 * @property {number} inUse how many activities run it now
 * @property {string[]} providers the providers that hold it (at most 1,000)
 * @property {string[]} owners the tenants that pushed it, as far as this requestor may know (a hub ≥ 1.4; else [])
 * @property {string[] | null} shared whom the holder shares it with (to its owner or an admin; else null)
 * @property {boolean} public whether it is shared with every tenant
 */

/**
 * The wire's image info in the JS API's names.
 * @param {import("../types/protocol.js").ImageInfo} wire
 * @returns {ImageInfo}
 */
function imageInfo(wire) {
  return {
    digest: wire.digest,
    tags: [...wire.tags],
    size: wire.size,
    layers: wire.layers,
    arch: wire.arch,
    os: wire.os,
    pushed: wire.pushed,
    lastUsed: wire.last_used,
    inUse: wire.in_use,
    providers: [...wire.providers],
    owners: [...(wire.owners ?? [])],
    shared: wire.shared ? [...wire.shared] : null,
    public: wire.public ?? false,
  };
}

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
/** A provider loads a rent's image from the hub's store: `done` of `total` bytes so far. @typedef {Required<Progress>} RentProgress */

/**
 * The options of {@link connect}.
 * @typedef {object} ConnectOptions
 * @property {string} [token] the hub's token, if it wants one
 * @property {string} [name] the name this requestor gives the hub (default "requestor")
 * @property {number} [timeoutMs] how long the handshake may take (default 10 s)
 * @property {string | URL | Uint8Array} [ca] Node only: the CA that signed a wss:// hub's certificate, trusted
 *   instead of Node's own CAs: the path of its PEM file (a string, or a file: URL), its PEM text (a string holding
 *   "-----BEGIN"), or the bytes of its PEM file. A browser verifies the hub with its own trust store and refuses it.
 * @property {boolean} [reconnect] dial again when the connection drops (default true), for up to the `grace` the
 *   hub announced (protocol 1.2), resuming the session so that the activities the hub kept go on working
 * @property {boolean} [releaseOnSignal] Node only: on SIGINT or SIGTERM, close this requestor (releasing what it
 *   holds) before the process exits with 130 or 143 (default true; `src/node/signals.js` says more)
 */

/**
 * The options of {@link Requestor#rent}.
 * @typedef {object} RentOptions
 * @property {string} image
 * @property {DemandOptions} [demand]
 * @property {Iterable<string>} [exclude] providers (by name) to pass over
 * @property {string} [group] a name of the caller's: the hub keeps the live activities of one group on distinct providers
 * @property {"root"} [user] `"root"`: the activity's commands run as root (still without capabilities or network),
 *   on a provider whose operator allows it (NoMatchError when none does; a hub ≥ 1.2). Default: the image's USER, or nobody.
 * @property {AbortSignal} [signal]
 * @property {(progress: RentProgress) => void} [onProgress] how far the provider has loaded an image of the hub's store
 *   (a hub ≥ 1.1 tells)
 * @property {number} [maxDuration] (1.5) seconds the activity may be held: the hub ends it then (its `lost` is a
 *   RemoteError with code `expired`) and holds its worst-case cost for that long
 * @property {number | string} [budget] (1.5, with `group`) the most the group may ever spend at this hub, in credits:
 *   the first rent of a group sets it; a rent its rest cannot cover is refused with BudgetExceededError
 * @property {Strategy} [strategy] (1.5) how the hub picks among the providers that fit (default "least_loaded")
 * @property {Iterable<string>} [allow] (1.5) only these providers (by name) may be picked
 * @property {Iterable<string>} [deny] providers (by name) never to pick: added to `exclude`
 * @property {number} [minReputation] (1.5) only providers whose reputation (0 to 1) is at least this
 */

/** (1.5) How the hub picks a provider among those that fit. @typedef {"least_loaded" | "cheapest" | "reputation"} Strategy */

/**
 * (1.5) What a priced activity owes so far, as the hub captured it (a `cost` message): `due`
 * in credits (`dueMicro` exactly), cumulative, for `seconds` held and `cpuSeconds` billed; the
 * `seq`-th capture, `final` at the activity's end.
 * @typedef {object} CostInfo
 * @property {string} activity
 * @property {number} seq
 * @property {number} due
 * @property {number} dueMicro
 * @property {number} seconds
 * @property {number} cpuSeconds
 * @property {boolean} final
 */

/**
 * (1.5) This requestor's account at the hub, in credits (and exactly, in micro-credits): what is
 * `available` to hold, `held` for its live activities, `spent` in all.
 * @typedef {object} Balance
 * @property {string} account
 * @property {number} available
 * @property {number} held
 * @property {number} spent
 * @property {{available: number, held: number, spent: number}} micro
 */

/**
 * (1.5) One movement of credits in the hub's ledger: its entries sum to zero (`amount` in
 * credits, `amountMicro` exactly; negative: out of the account).
 * @typedef {object} LedgerTransaction
 * @property {number} id
 * @property {string} key its idempotency key
 * @property {string} kind
 * @property {number} time the hub's clock, Unix seconds
 * @property {string | null} activity
 * @property {{account: string, amount: number, amountMicro: number}[]} entries
 */

/**
 * The options of {@link Requestor#ledger}.
 * @typedef {object} LedgerOptions
 * @property {string} [account] another account's (an admin credential's only)
 * @property {number} [limit] at most this many transactions (1 to 1000), default 100
 */

/**
 * The options of {@link Requestor#estimate}.
 * @typedef {object} EstimateOptions
 * @property {number} maxDuration seconds each activity would be held
 * @property {number} [activities] how many activities, default 1
 * @property {number | string} [budget] credits: the estimate is never more
 * @property {string} [image] only providers that hold this image
 * @property {Iterable<string>} [allow] only these providers
 * @property {Iterable<string>} [deny] never these providers
 * @property {number} [minReputation] only providers whose reputation is at least this
 */

/**
 * The options of {@link Requestor#pushImage}.
 * @typedef {object} PushOptions
 * @property {string[]} [tags] tags to give the image besides those in the archive (its `RepoTags`)
 * @property {(progress: {done: number, total: number}) => void} [onProgress] how far the blobs the hub wants have
 *   gone: `done` of `total` bytes
 * @property {AbortSignal} [signal]
 */

/** In Node the path of a `docker save` archive; in a browser a Blob or File of one. @typedef {string | URL | Blob} ImageArchiveSource */

/**
 * Whom {@link Requestor#shareImage} shares an image with (at least one of `with` and `public`).
 * @typedef {object} ShareOptions
 * @property {string[]} [with] tenants: credential names (`kiln token ls`), `#<id>` for an id, `#open` for requestors
 *   without a credential
 * @property {boolean} [public] share it with every tenant of the hub
 * @property {boolean} [revoke] take these shares back instead
 */

/**
 * The images in the hub's store, most recently used first, and the bytes it holds (`used`) of its `limit`.
 * @typedef {{images: ImageInfo[], used: number, limit: number}} ImageList
 */

/**
 * The options of {@link Requestor#market}.
 * @typedef {object} MarketOptions
 * @property {string} [image] only providers that hold this image
 * @property {Record<string, string>} [labels] only providers carrying all these labels
 * @property {ResourcesOptions} [free] only providers with at least this much capacity free
 * @property {number} [limit] at most this many providers (1 to 1000); default 100
 */

/**
 * The options of {@link Requestor#listActivities}.
 * @typedef {object} ActivitiesOptions
 * @property {boolean} [all] every activity at the hub, not only this requestor's (an admin credential's only)
 * @property {number} [limit] at most this many activities (1 to 1000, by id); default 1000
 */

/**
 * @typedef {object} DemandOptions
 * @property {number} [cpus] at least this many CPUs (fractions allowed), default 1
 * @property {number | string} [memory] bytes or e.g. "256MiB", default 256MiB
 * @property {number | string} [storage] bytes or e.g. "1GiB", default 0
 * @property {Record<string, string>} [labels] labels the provider must carry exactly
 * @property {import("./money.js").PriceOptions} [maxPrice] (1.5) the most to pay, in credits: a provider whose
 *   `start`, `cpuHour` or `envHour` rate is above the cap's is not matched (a rate left out caps at 0)
 */

/**
 * The wire form of a demand; a UsageError for a bad value.
 * @param {DemandOptions} [demand]
 * @returns {{cpus: number, memory: number, storage: number, labels: Record<string, string>,
 *   max_price?: import("./money.js").WirePrice}}
 */
export function demandMessage(demand = {}) {
  if (typeof demand !== "object" || demand === null) throw new UsageError("demand must be an object");
  const cpus = demand.cpus ?? 1;
  if (typeof cpus !== "number" || !(cpus > 0) || cpus > 4096) {
    throw new UsageError(`cpus must be a positive number, not ${JSON.stringify(cpus)}`);
  }
  const wire = {
    cpus,
    memory: parseSize(demand.memory ?? "256MiB"),
    storage: parseSize(demand.storage ?? 0),
    labels: { ...(demand.labels ?? {}) },
  };
  // Only when given: a hub below 1.5 knows no max_price.
  return demand.maxPrice == null ? wire : { ...wire, max_price: priceMessage(demand.maxPrice, "maxPrice") };
}

/**
 * A `cost` message in the JS API's names and credits.
 * @param {import("../types/protocol.js").Cost} cost
 * @returns {CostInfo}
 */
function costInfo(cost) {
  return {
    activity: cost.activity,
    seq: cost.seq,
    due: credits(cost.due),
    dueMicro: cost.due,
    seconds: cost.seconds,
    cpuSeconds: cost.cpu_seconds,
    final: cost.final ?? false,
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

/**
 * A live connection to the hub as a requestor. Get one from `connect()`.
 *
 * `connection` is to `hubs.current`. With `dial`, a connection that drops is dialled again,
 * to the hubs of `hubs` in its order (see the module's comment).
 */
export class Requestor {
  /** @param {Connection} connection @param {Platform} platform @param {HubRing} hubs @param {Dial | null} [dial] */
  constructor(connection, platform, hubs, dial = null) {
    this._conn = connection;
    this._platform = platform;
    this._hubs = hubs;
    this._dial = dial;
    /** @type {Map<string, Activity>} */
    this._activities = new Map();
    /** @type {Set<Promise<void>>} releases of activities whose rent was abandoned */
    this._cleanups = new Set();
    /** @type {Deferred<void> | null} settles when a reconnect under way is over (null: none is) */
    this._up = null;
    /** @type {Deferred<void>} settles when close() gives up a reconnect */
    this._closing = new Deferred();
    /** @type {Deferred<void>} settles when close() is done */
    this._closed = new Deferred();
    /** @type {Promise<void> | null} the reconnect under way, awaited by close() */
    this._redialing = null;
    /** @type {ConnectionClosedError | null} why this requestor has no connection for good (closed, or no reconnect in time) */
    this.gone = null;
    /** @type {Set<(cost: CostInfo) => void>} */
    this._costListeners = new Set();
    /** @type {Map<string, Activity>} the latest ENDED_KEPT activities released or lost, oldest first */
    this._ended = new Map();
    this._watch(connection);
  }

  /** The connection of the moment (a reconnect replaces it). */
  get connection() {
    return this._conn;
  }

  /** The URL of the hub this requestor is on (while it reconnects, the one it was on). */
  get url() {
    return this._hubs.current;
  }

  /** Whether the connection dropped and is being dialled again. */
  get reconnecting() {
    return this._up !== null;
  }

  /**
   * The connection to use now, once a reconnect under way is over. Rejects with
   * ConnectionLostError when it failed (ConnectionClosedError once closed).
   * @returns {Promise<Connection>}
   */
  async _connected() {
    if (this._up !== null) await this._up.promise;
    if (this.gone !== null) throw this.gone;
    return this._conn;
  }

  /** Wait out a reconnect: true when the connection is back, false when it is gone for good. */
  async reconnected() {
    if (this._up !== null) await this._up.promise;
    return this.gone === null;
  }

  /** When `conn` ends, dial again unless it was closed by us or cannot be resumed. @param {Connection} conn */
  _watch(conn) {
    void conn.finished.promise.then(() => {
      if (conn !== this._conn || this.gone !== null) return;
      const lost = /** @type {ConnectionClosedError} */ (conn.session.closed);
      const welcome = conn.session.welcome;
      if (this._closing.settled || this._dial === null || !(lost instanceof ConnectionLostError) ||
          !welcome?.resume || !welcome.grace) {
        this.gone = lost;
        return;
      }
      const up = new Deferred();
      this._up = up;
      this._redialing = this._redial(welcome.resume, welcome.grace, lost).then(
        (next) => this._takeOver(next),
        (/** @type {ConnectionClosedError} */ e) => {
          this.gone = e;
          for (const activity of this._activities.values()) activity.lost = e;
          this._activities.clear();
        },
      ).finally(() => {
        this._up = null;
        up.resolve(undefined);
      });
    });
  }

  /**
   * Dial with `secret` until a dial succeeds, `grace` seconds pass, or close() gives up: in
   * rounds, each of every hub (the one it was on first), waiting between two rounds.
   * @param {string} secret
   * @param {number} grace
   * @param {ConnectionLostError} lost
   * @returns {Promise<Connection>}
   */
  async _redial(secret, grace, lost) {
    const dial = /** @type {Dial} */ (this._dial);
    const deadline = Date.now() + grace * 1000;
    // close() gives up the dial under way and the wait between two, leaving no timer behind.
    const abandon = new AbortController();
    const closing = this._closing.promise.then(() => {
      abandon.abort();
      return null;
    });
    const givenUp = () => new ConnectionClosedError("the requestor was closed while it reconnected");
    let delay = REDIAL_FIRST_MS;
    let why = "";
    for (;;) {
      for (const url of this._hubs.order()) {
        const dialing = dial(url, secret, Math.max(deadline - Date.now(), 100), abandon.signal);
        try {
          const conn = await Promise.race([dialing, closing]);
          if (conn !== null) {
            this._hubs.moved(url);
            return conn;
          }
          dialing.then((late) => late.close(), () => {}); // up after all: nobody wants it
          throw givenUp();
        } catch (e) {
          if (abandon.signal.aborted) throw givenUp(); // whatever the abandoned dial said
          if (e instanceof ConnectionClosedError && !(e instanceof ConnectionLostError)) throw e;
          if (!(e instanceof ConnectionLostError)) {
            // The hub refused us (a token revoked, say): dialling again cannot help.
            const text = e instanceof Error ? e.message : String(e);
            throw new ConnectionLostError(`${lost.message}; the hub refused the reconnect: ${text}`, { cause: e });
          }
          why = e.message;
        }
        if (Date.now() >= deadline) break;
      }
      if (Date.now() + delay >= deadline) {
        throw new ConnectionLostError(`${lost.message}; no reconnect within ${grace} s (last: ${why})`, { cause: lost });
      }
      if (!(await sleep(delay, abandon.signal))) throw givenUp();
      delay = Math.min(delay * 2, REDIAL_MOST_MS);
    }
  }

  /** The new connection is up: what the hub did not keep is lost. @param {Connection} conn */
  _takeOver(conn) {
    const kept = new Set(conn.session.welcome?.resumed ?? []);
    for (const activity of [...this._activities.values()]) {
      if (kept.has(activity.id)) continue;
      activity.lost = new ConnectionLostError(`activity ${activity.id} was not kept while the connection was down`);
      this._activities.delete(activity.id);
    }
    conn.onEvent = (event) => this._onEvent(event);
    this._conn = conn;
    this._watch(conn);
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
   *
   * The market (a hub ≥ 1.5; UnsupportedVersionError before anything is sent to an older
   * one): `demand.maxPrice` caps the provider's rates (in credits), `strategy` picks among
   * those that fit ("least_loaded", "cheapest", "reputation"), `allow` and `deny` name
   * providers, `minReputation` filters, `maxDuration` ends the activity after so many
   * seconds, and `budget` caps what the whole `group` spends. When the hub keeps a ledger, a
   * rent holds its worst case of the requestor's credits (the activity's `hold`): refused
   * with InsufficientFundsError when they cannot, BudgetExceededError when the group's budget
   * cannot. What a priced activity owes comes as it is captured: {@link Requestor#onCost}.
   * @param {RentOptions} options
   * @returns {Promise<Activity>}
   */
  async rent(options) {
    const { image, signal } = options ?? {};
    if (typeof image !== "string") throw new UsageError("rent needs an image, e.g. { image: 'kiln-busybox:latest' }");
    const demand = demandMessage(options.demand);
    const exclude = [...new Set([...(options.exclude ?? []), ...(options.deny ?? [])])].sort();
    const group = options.group ?? null;
    const market = marketFields(options, group);
    const user = options.user ?? null;
    if (user !== null && user !== "root") throw new UsageError(`user may only be "root", not ${JSON.stringify(user)}`);
    throwIfAborted(signal, `renting ${image}`);
    const conn = await this._connected();
    throwIfAborted(signal, `renting ${image}`);
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
    const message = { type: "rent", id, image, demand, exclude, group, user, ...market };
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
    const onRelease = (/** @type {Activity} */ a) => {
      this._activities.delete(a.id);
      this._endedNow(a);
    };
    const activity = new Activity(this, rented, this._platform.files, onRelease, this._platform.ports);
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
   * Keep `replicas` copies of `command` running on distinct providers, each healthy by
   * `health` (`Http(port, path)` or `Tcp(port)`); resolves once every one is healthy. A
   * replica whose health fails, whose provider is lost, or whose command ends past what
   * `restart` restarts in place is replaced on another provider (rented, `setup(act)`,
   * started); `onEvent` hears each event. See `src/service.js`.
   * @param {import("./service.js").ServiceOptions} options
   * @returns {Promise<Service>}
   */
  async service(options) {
    return new Service(this, options).start();
  }

  /**
   * The providers the hub knows (their offer, what is free now, the images they hold), by
   * name: only those holding `image`, carrying `labels` and with at least `free` capacity
   * left; at most `limit` (1 to 1000, default 100) of them.
   * @param {MarketOptions} [options]
   * @returns {Promise<import("../types/protocol.js").ProviderInfo[]>}
   */
  async market(options = {}) {
    const { image = null, labels = {}, limit = 100 } = options;
    const conn = await this._connected();
    const query = { type: "market", id: conn.newId(), image, labels, free: resourcesMessage(options.free), limit };
    const reply = /** @type {import("../types/protocol.js").MarketInfo} */ (await conn.request(query));
    return reply.providers;
  }

  /**
   * The activities this requestor holds at the hub, by id: each with its requestor's and
   * provider's names, its `state` (`creating`, `ready`, `destroying`, or `absent`: held
   * since a restart of the hub for a provider that has not come back yet), resources,
   * group, `started` (the hub's clock when it became ready, Unix seconds) and image. With
   * `all: true`, every activity at the hub: only for a requestor that joined with an admin
   * credential (`kiln token create --role admin`), else UnauthorizedError. Listing
   * another's activity lets no one touch it. At most `limit` (1 to 1000, default 1000) of
   * them; UnsupportedVersionError from a hub below protocol 1.3.
   * @param {ActivitiesOptions} [options]
   * @returns {Promise<ActivityInfo[]>}
   */
  async listActivities(options = {}) {
    const { all = false, limit = MAX_LISTED } = options;
    const conn = await this._connected();
    const list = /** @type {import("../types/protocol.js").ActivityList} */ (
      await conn.request({ type: "activities", id: conn.newId(), all, limit })
    );
    return [...list.activities];
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
   * @param {ImageArchiveSource} local
   * @param {PushOptions} [options]
   * @returns {Promise<PushedImage>}
   */
  async pushImage(local, options = {}) {
    const { onProgress, signal } = options;
    throwIfAborted(signal, "the push");
    const archive = await this._platform.images.open(local);
    const what = `the push of ${archive.file.name}`;
    try {
      const tags = [...new Set([...archive.tags, ...(options.tags ?? [])])];
      const conn = await this._connected();
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
          image: imageInfo(pushed.image),
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
   * The images in the hub's store this requestor may see (its own, and those shared with
   * it), most recently used first, with the bytes they hold and the store's limit.
   * UnsupportedVersionError from a hub of protocol 1.0.
   * @returns {Promise<ImageList>}
   */
  async listImages() {
    const conn = await this._connected();
    const list = /** @type {import("../types/protocol.js").ImageList} */ (
      await conn.request({ type: "list_images", id: conn.newId() })
    );
    return { images: list.images.map(imageInfo), used: list.used, limit: list.limit };
  }

  /**
   * Remove an image this requestor pushed (by tag or digest) from the hub's store.
   * ImageNotFoundError when the store holds no such image it may see; UnauthorizedError for
   * one shared with it that it did not push; UnsupportedVersionError from a hub of protocol 1.0.
   * @param {string} ref
   */
  async removeImage(ref) {
    if (typeof ref !== "string") throw new UsageError("removeImage takes a tag or a digest");
    const conn = await this._connected();
    await conn.request({ type: "remove_image", id: conn.newId(), image: ref });
  }

  /**
   * Share an image this requestor pushed (by tag or digest) with the tenants `with` (credential
   * names as `kiln token ls` shows them, `#<id>` for an id, `#open` for the requestors that join
   * without a credential), and with `public: true` with everyone: they can then rent it by its
   * digest (tags stay each tenant's own). With `revoke: true`, take those shares back.
   * ImageNotFoundError for an image this requestor cannot see; UnauthorizedError for one it
   * sees but did not push (unless it joined with an admin credential); UsageError for a name
   * no live requestor credential has, or when neither `with` nor `public` is given;
   * UnsupportedVersionError from a hub older than protocol 1.4.
   * @param {string} ref
   * @param {ShareOptions} options
   */
  async shareImage(ref, options) {
    if (typeof ref !== "string") throw new UsageError("shareImage takes a tag or a digest");
    const { with: to = [], public: everyone = false, revoke = false } = options ?? {};
    if (!Array.isArray(to)) throw new UsageError("shareImage's `with` is a list of tenant names");
    const conn = await this._connected();
    const message = { type: "share_image", id: conn.newId(), image: ref, to: [...to], public: everyone, revoke };
    try {
      await conn.request(message);
    } catch (e) {
      if (e instanceof LocalProtocolError) throw new UsageError(`cannot share ${ref}: ${e.message}`, { cause: e });
      throw e;
    }
  }

  /**
   * A job not started yet: follow its `events()` or `onEvent`, then `run()` it (see
   * `src/executor.js` for the semantics). Options: `image`, `demand`, `maxProviders` (4),
   * `retries` (2), `taskTimeoutMs`, `startTimeoutMs` (60 s), `setup`, `teardown`,
   * `returnExceptions`, `onEvent`, `signal`. The parts are read as the job's slots free up.
   * @template P, R
   * @overload
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").JobOptions} options
   * @returns {Job<P, R>}
   */
  /**
   * The old order of {@link Requestor#job}, accepted for one release with a deprecation warning.
   * @deprecated call `job(worker, parts, options)`
   * @template P, R
   * @overload
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {import("./executor.js").JobOptions} options
   * @returns {Job<P, R>}
   */
  /**
   * @template P, R
   * @param {import("./executor.js").Worker<P, R> | Iterable<P>} worker
   * @param {Iterable<P> | import("./executor.js").Worker<P, R>} parts
   * @param {import("./executor.js").JobOptions} options
   * @returns {Job<P, R>}
   */
  job(worker, parts, options) {
    return new Job(this, ...workerAndParts(worker, parts), options);
  }

  /**
   * Run `worker(activity, part, context)` for every part on rented activities and resolve
   * to the results in input order. Rejects with TaskFailedError when a task fails for good.
   * @template P, R
   * @overload
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").JobOptions} options
   * @returns {Promise<R[]>}
   */
  /**
   * The old order of {@link Requestor#map}, accepted for one release with a deprecation warning.
   * @deprecated call `map(worker, parts, options)`
   * @template P, R
   * @overload
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {import("./executor.js").JobOptions} options
   * @returns {Promise<R[]>}
   */
  /**
   * @template P, R
   * @param {import("./executor.js").Worker<P, R> | Iterable<P>} worker
   * @param {Iterable<P> | import("./executor.js").Worker<P, R>} parts
   * @param {import("./executor.js").JobOptions} options
   * @returns {Promise<R[]>}
   */
  async map(worker, parts, options) {
    return this.job(...workerAndParts(worker, parts), options).run();
  }

  /**
   * Like {@link Requestor#map}, but yield `[index, result]` as each task finishes.
   * Stopping the iteration early ends the job and releases its activities.
   * @template P, R
   * @overload
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").JobOptions} options
   * @returns {AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>}
   */
  /**
   * The old order of {@link Requestor#mapUnordered}, accepted for one release with a deprecation warning.
   * @deprecated call `mapUnordered(worker, parts, options)`
   * @template P, R
   * @overload
   * @param {Iterable<P>} parts
   * @param {import("./executor.js").Worker<P, R>} worker
   * @param {import("./executor.js").JobOptions} options
   * @returns {AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>}
   */
  /**
   * @template P, R
   * @param {import("./executor.js").Worker<P, R> | Iterable<P>} worker
   * @param {Iterable<P> | import("./executor.js").Worker<P, R>} parts
   * @param {import("./executor.js").JobOptions} options
   * @returns {AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>}
   */
  mapUnordered(worker, parts, options) {
    // An async generator of its own (tsc takes no overloads of an `async *` method): as
    // before, nothing is checked or rented until the first result is asked for.
    const job = () => this.job(...workerAndParts(worker, parts), options);
    return (async function* () {
      yield* job().results();
    })();
  }

  /**
   * (1.5) Call `listener` with what each priced activity of this requestor owes, every time
   * the hub captures it (at least every minute while it runs, and once, `final`, at its end,
   * also after its release).
   * @param {(cost: CostInfo) => void} listener
   * @returns {() => void} stops the calls
   */
  onCost(listener) {
    this._costListeners.add(listener);
    return () => {
      this._costListeners.delete(listener);
    };
  }

  /**
   * (1.5) This requestor's account at the hub: what is available, held and spent, in credits.
   * UnsupportedVersionError from a hub below 1.5.
   * @returns {Promise<Balance>}
   */
  async balance() {
    const conn = await this._connected();
    const info = /** @type {import("../types/protocol.js").BalanceInfo} */ (await conn.request({ type: "balance", id: conn.newId() }));
    const spent = info.spent ?? 0;
    return {
      account: info.account,
      available: credits(info.available),
      held: credits(info.held),
      spent: credits(spent),
      micro: { available: info.available, held: info.held, spent },
    };
  }

  /**
   * (1.5) The latest transactions of this requestor's account, newest first (an admin's:
   * `account`'s, or every account's), at most `limit`; `matched` counts them all.
   * UnsupportedVersionError from a hub below 1.5.
   * @param {LedgerOptions} [options]
   * @returns {Promise<{transactions: LedgerTransaction[], matched: number}>}
   */
  async ledger(options = {}) {
    const { account = null, limit = 100 } = options;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LISTED) throw new UsageError(`limit is an integer from 1 to ${MAX_LISTED}`);
    const conn = await this._connected();
    const list = /** @type {import("../types/protocol.js").LedgerList} */ (
      await conn.request({ type: "ledger", id: conn.newId(), account, limit })
    );
    return {
      transactions: list.transactions.map((t) => ({
        id: t.id,
        key: t.key,
        kind: t.kind,
        time: t.time,
        activity: t.activity ?? null,
        entries: t.entries.map((e) => ({ account: e.account, amount: credits(e.amount), amountMicro: e.amount })),
      })),
      matched: list.matched,
    };
  }

  /**
   * (1.5) Tell the hub that the result of activity `lost` disagreed with those of the
   * activities `agreed` (at least two, on other providers, agreeing among themselves): it
   * counts against `lost`'s provider's reputation and the requestor is paid back what `lost`
   * cost. Jobs with `verify` send this themselves. ActivityError (code `unknown_activity`)
   * for an activity not this requestor's; UnsupportedVersionError from a hub below 1.5.
   * @param {string} lost
   * @param {Iterable<string>} agreed
   */
  async reportVerdict(lost, agreed) {
    const ids = [...agreed];
    if (typeof lost !== "string" || ids.length < 2 || ids.some((a) => typeof a !== "string" || a === lost)) {
      throw new UsageError("a verdict names the losing activity and at least two others that agreed");
    }
    const conn = await this._connected();
    await conn.request({ type: "verdict", id: conn.newId(), lost, agreed: ids });
  }

  /**
   * (1.6) Tell the hub how an attempt of a job's task went, for its dashboard: it `started`
   * on `activity`, or ended (`done`, `retried`, `failed`) for `reason` having moved `bytes`.
   * Sent without waiting, and no reply comes; a job sends these itself for each attempt's
   * start and end. Dropped, silently, when the hub is older than 1.6, while the connection is
   * down or being dialled again, while the socket is backed up, and when a field is out of
   * the protocol's bounds: a report never slows or fails a job.
   * @param {TaskReportFields} report
   */
  reportTask({ group, task, attempt, state, activity, reason = "", bytes = 0 }) {
    const conn = this._conn;
    if (this.reconnecting || conn.session.state !== State.OPEN || conn.session.minor < TASK_REPORTS) return;
    try {
      conn.notify({
        type: "task",
        group,
        task,
        attempt: Math.min(attempt, MAX_TASK_ATTEMPT),
        state,
        activity: activity ?? null,
        reason: reason === "" ? null : clip(reason, MAX_REASON),
        bytes,
      });
    } catch (e) {
      if (!(e instanceof KilnError)) throw e;
    }
  }

  /**
   * (1.5) The most `activities` activities meeting `demand` could cost, each held
   * `maxDuration` seconds, in credits, before anything runs: the dearest worst case among the
   * providers the market lists that fit (`demand`'s resources, labels and `maxPrice`; `image`,
   * `allow`, `deny`, `minReputation`), times `activities`, and never more than `budget`. A
   * free provider costs 0. Asks the hub's market (at most 1,000 providers). NoMatchError
   * when none fits; UsageError for a bad option.
   * @param {DemandOptions} demand
   * @param {EstimateOptions} options
   * @returns {Promise<number>}
   */
  async estimate(demand, options) {
    const wire = demandMessage(demand);
    const { maxDuration, activities = 1, budget, image, allow, deny = [], minReputation } = options ?? {};
    if (maxDuration == null) throw new UsageError("estimate needs maxDuration, in seconds");
    // The group only matters to a rent's budget; here the budget caps the estimate.
    const terms = marketFields({ maxDuration, budget, allow, minReputation }, "estimate");
    if (!Number.isInteger(activities) || activities < 1) throw new UsageError("activities is an integer of at least 1");
    const allowed = terms.allow === undefined ? null : new Set(terms.allow);
    const denied = new Set(deny);
    const providers = await this.market({ ...(image === undefined ? {} : { image }), labels: wire.labels, limit: MAX_LISTED });
    /** @type {number | null} */
    let worst = null;
    for (const provider of providers) {
      const offered = provider.offered;
      if (offered.cpus < wire.cpus || offered.memory < wire.memory || offered.storage < wire.storage) continue;
      if (denied.has(provider.name) || (allowed !== null && !allowed.has(provider.name))) continue;
      if (terms.min_reputation !== undefined && (provider.reputation ?? 0) < terms.min_reputation) continue;
      const price = provider.price ?? null;
      if (wire.max_price !== undefined && price !== null && !within(price, wire.max_price)) continue;
      const each = price === null ? 0 : worstCase(price, wire.cpus, maxDuration);
      worst = worst === null ? each : Math.max(worst, each);
    }
    if (worst === null) throw new NoMatchError("no provider the hub lists fits this demand and these terms");
    const total = worst * activities;
    return credits(terms.budget === undefined ? total : Math.min(total, terms.budget));
  }

  /** Keep `activity` a while after its end: the hub's final `cost` of it may follow. @param {Activity} activity */
  _endedNow(activity) {
    this._ended.delete(activity.id);
    this._ended.set(activity.id, activity);
    if (this._ended.size > ENDED_KEPT) this._ended.delete(/** @type {string} */ (this._ended.keys().next().value));
  }

  /** @param {import("../types/protocol.js").SessionEvent} event */
  _onEvent(event) {
    if (event.type === "notified" && event.message.type === "cost") {
      const cost = costInfo(event.message);
      const activity = this._activities.get(cost.activity) ?? this._ended.get(cost.activity);
      if (activity !== undefined) activity.cost = cost;
      for (const listener of [...this._costListeners]) listener(cost);
      return;
    }
    if (event.type === "notified" && event.message.type === "activity_lost") {
      const lost = event.message;
      const activity = this._activities.get(lost.activity);
      if (activity !== undefined) {
        this._activities.delete(lost.activity);
        activity.lost = errorFromCode(lost.code, lost.reason);
        this._endedNow(activity);
      }
    }
  }

  /**
   * Release every activity still held and close the connection, for good (no reconnect:
   * the hub ends the session at once). A reconnect under way is given up: the hub destroys
   * what it held once its grace period ends.
   */
  async close() {
    this._closing.resolve();
    try {
      if (this._redialing !== null) await this._redialing;
      const held = [...this._activities.values()];
      await Promise.allSettled(held.map((a) => a.release()));
      await settlesWithin(Promise.allSettled([...this._cleanups]), CLEANUP_WAIT_MS);
      this._activities.clear();
      await this._conn.close();
      this.gone ??= /** @type {ConnectionClosedError} */ (this._conn.session.closed);
    } finally {
      this._closed.resolve();
    }
  }
}

/**
 * Connect to the hub at `url` as a requestor: one hub's URL, or those of several hubs of one
 * market (an array, or one string with commas), of which it joins the first that answers.
 * With `reconnect` (default), a connection that drops is dialled again for as long as the
 * hub keeps the requestor's activities, to the hub it was on first, then to the others (see
 * {@link Requestor}).
 *
 * Throws a UsageError (before any dial) naming a URL that is not a hub's, and a
 * ConnectionLostError saying why each hub failed when none answers.
 * @param {Platform} platform
 * @param {string | string[]} url
 * @param {ConnectOptions} [options]
 * @returns {Promise<Requestor>}
 */
export async function connectWith(platform, url, options = {}) {
  const name = options.name ?? "requestor";
  const token = options.token ?? null;
  const hubs = new HubRing(url);
  /** @type {ConnectionLostError[]} */
  const failures = [];
  /** @type {string[]} why each hub failed, naming it */
  const reasons = [];
  for (const at of hubs.order()) {
    /** @type {Connection} */
    let connection;
    try {
      connection = await Connection.open(platform.openSocket, at, { name, token, timeoutMs: options.timeoutMs });
    } catch (e) {
      if (!(e instanceof ConnectionLostError)) throw e; // another hub would say the same
      failures.push(e);
      reasons.push(e.message.includes(at) ? e.message : `${at}: ${e.message}`);
      continue;
    }
    hubs.moved(at);
    /** @type {Dial} */
    const dial = (to, resume, timeoutMs, signal) => Connection.open(platform.openSocket, to, {
      name, token, resume, signal, timeoutMs: Math.min(timeoutMs, options.timeoutMs ?? timeoutMs),
    });
    const requestor = new Requestor(connection, platform, hubs, options.reconnect === false ? null : dial);
    connection.onEvent = (event) => requestor._onEvent(event);
    return requestor;
  }
  if (failures.length === 1) throw failures[0];
  throw new ConnectionLostError(`no hub answered: ${reasons.join("; ")}`, { cause: failures[failures.length - 1] });
}
