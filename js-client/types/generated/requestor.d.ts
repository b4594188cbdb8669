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
import { Deferred } from "./deferred.js";
import { ConnectionClosedError, ConnectionLostError } from "./errors.js";
import { Job } from "./executor.js";
import { Service } from "./service.js";
export type TaskReportFields = {
    /**
     * the job's group (its rents name it)
     */
    group: string;
    /**
     * the task's index
     */
    task: number;
    /**
     * 1 for its first attempt
     */
    attempt: number;
    state: "started" | "done" | "retried" | "failed";
    /**
     * where it ran
     */
    activity?: string;
    /**
     * why it ended
     */
    reason?: string;
    /**
     * bytes it moved
     */
    bytes?: number;
};
export type Dial = (url: string, resume: string, timeoutMs: number, signal: AbortSignal) => Promise<Connection>;
export type Platform = {
    openSocket: import("./connection.js").OpenSocket;
    files: import("./activity.js").Files;
    /**
     * how a connection to a container's port is presented
     * (Node: a Duplex, and forwarding; default: a PortSocket)
     */
    ports?: import("./ports.js").Ports;
    /**
     * opens a `docker save`
     * archive (Node: a path; a browser: a Blob or File); close it with `archive.file.close()`
     */
    images: {
        open: (local: any) => Promise<import("./image.js").ImageArchive>;
    };
};
export type ActivityInfo = import("../protocol.js").ActivityInfo;
export type ImageInfo = {
    /**
     * Docker's image id (`sha256:…`)
     */
    digest: string;
    tags: string[];
    /**
     * bytes of its config and layers
     */
    size: number;
    layers: number;
    arch: string;
    os: string;
    /**
     * when it was pushed (the hub's clock, Unix seconds)
     */
    pushed: number;
    /**
     * when an activity last ran it (null: never)
     */
    lastUsed: number | null;
    /**
     * how many activities run it now
     */
    inUse: number;
    /**
     * the providers that hold it (at most 1,000)
     */
    providers: string[];
    /**
     * the tenants that pushed it, as far as this requestor may know (a hub ≥ 1.4; else [])
     */
    owners: string[];
    /**
     * whom the holder shares it with (to its owner or an admin; else null)
     */
    shared: string[] | null;
    /**
     * whether it is shared with every tenant
     */
    public: boolean;
};
export type PushedImage = {
    digest: string;
    tags: string[];
    /**
     * bytes of its config and layers
     */
    size: number;
    sentBytes: number;
    skippedBytes: number;
    /**
     * as the hub's store holds it
     */
    image: ImageInfo;
};
export type Progress = {
    done: number;
    total: number;
    provider?: string;
    image?: string;
};
export type RentProgress = Required<Progress>;
export type ConnectOptions = {
    /**
     * the hub's token, if it wants one
     */
    token?: string;
    /**
     * the name this requestor gives the hub (default "requestor")
     */
    name?: string;
    /**
     * how long the handshake may take (default 10 s)
     */
    timeoutMs?: number;
    /**
     * Node only: the CA that signed a wss:// hub's certificate, trusted
     * instead of Node's own CAs: the path of its PEM file (a string, or a file: URL), its PEM text (a string holding
     * "-----BEGIN"), or the bytes of its PEM file. A browser verifies the hub with its own trust store and refuses it.
     */
    ca?: string | URL | Uint8Array;
    /**
     * dial again when the connection drops (default true), for up to the `grace` the
     * hub announced (protocol 1.2), resuming the session so that the activities the hub kept go on working
     */
    reconnect?: boolean;
    /**
     * Node only: on SIGINT or SIGTERM, close this requestor (releasing what it
     * holds) before the process exits with 130 or 143 (default true; `src/node/signals.js` says more)
     */
    releaseOnSignal?: boolean;
};
export type RentOptions = {
    image: string;
    demand?: DemandOptions;
    /**
     * providers (by name) to pass over
     */
    exclude?: Iterable<string>;
    /**
     * a name of the caller's: the hub keeps the live activities of one group on distinct providers
     */
    group?: string;
    /**
     * `"root"`: the activity's commands run as root (still without capabilities or network),
     * on a provider whose operator allows it (NoMatchError when none does; a hub ≥ 1.2). Default: the image's USER, or nobody.
     */
    user?: "root";
    signal?: AbortSignal;
    /**
     * how far the provider has loaded an image of the hub's store
     * (a hub ≥ 1.1 tells)
     */
    onProgress?: (progress: RentProgress) => void;
    /**
     * (1.5) seconds the activity may be held: the hub ends it then (its `lost` is a
     * RemoteError with code `expired`) and holds its worst-case cost for that long
     */
    maxDuration?: number;
    /**
     * (1.5, with `group`) the most the group may ever spend at this hub, in credits:
     * the first rent of a group sets it; a rent its rest cannot cover is refused with BudgetExceededError
     */
    budget?: number | string;
    /**
     * (1.5) how the hub picks among the providers that fit (default "least_loaded")
     */
    strategy?: Strategy;
    /**
     * (1.5) only these providers (by name) may be picked
     */
    allow?: Iterable<string>;
    /**
     * providers (by name) never to pick: added to `exclude`
     */
    deny?: Iterable<string>;
    /**
     * (1.5) only providers whose reputation (0 to 1) is at least this
     */
    minReputation?: number;
};
export type Strategy = "least_loaded" | "cheapest" | "reputation";
export type CostInfo = {
    activity: string;
    seq: number;
    due: number;
    dueMicro: number;
    seconds: number;
    cpuSeconds: number;
    final: boolean;
};
export type Balance = {
    account: string;
    available: number;
    held: number;
    spent: number;
    micro: {
        available: number;
        held: number;
        spent: number;
    };
};
export type LedgerTransaction = {
    id: number;
    /**
     * its idempotency key
     */
    key: string;
    kind: string;
    /**
     * the hub's clock, Unix seconds
     */
    time: number;
    activity: string | null;
    entries: {
        account: string;
        amount: number;
        amountMicro: number;
    }[];
};
export type LedgerOptions = {
    /**
     * another account's (an admin credential's only)
     */
    account?: string;
    /**
     * at most this many transactions (1 to 1000), default 100
     */
    limit?: number;
};
export type EstimateOptions = {
    /**
     * seconds each activity would be held
     */
    maxDuration: number;
    /**
     * how many activities, default 1
     */
    activities?: number;
    /**
     * credits: the estimate is never more
     */
    budget?: number | string;
    /**
     * only providers that hold this image
     */
    image?: string;
    /**
     * only these providers
     */
    allow?: Iterable<string>;
    /**
     * never these providers
     */
    deny?: Iterable<string>;
    /**
     * only providers whose reputation is at least this
     */
    minReputation?: number;
};
export type PushOptions = {
    /**
     * tags to give the image besides those in the archive (its `RepoTags`)
     */
    tags?: string[];
    /**
     * how far the blobs the hub wants have
     * gone: `done` of `total` bytes
     */
    onProgress?: (progress: {
        done: number;
        total: number;
    }) => void;
    signal?: AbortSignal;
};
export type ImageArchiveSource = string | URL | Blob;
export type ShareOptions = {
    /**
     * tenants: credential names (`kiln token ls`), `#<id>` for an id, `#open` for requestors
     * without a credential
     */
    with?: string[];
    /**
     * share it with every tenant of the hub
     */
    public?: boolean;
    /**
     * take these shares back instead
     */
    revoke?: boolean;
};
export type ImageList = {
    images: ImageInfo[];
    used: number;
    limit: number;
};
export type MarketOptions = {
    /**
     * only providers that hold this image
     */
    image?: string;
    /**
     * only providers carrying all these labels
     */
    labels?: Record<string, string>;
    /**
     * only providers with at least this much capacity free
     */
    free?: ResourcesOptions;
    /**
     * at most this many providers (1 to 1000); default 100
     */
    limit?: number;
};
export type ActivitiesOptions = {
    /**
     * every activity at the hub, not only this requestor's (an admin credential's only)
     */
    all?: boolean;
    /**
     * at most this many activities (1 to 1000, by id); default 1000
     */
    limit?: number;
};
export type DemandOptions = {
    /**
     * at least this many CPUs (fractions allowed), default 1
     */
    cpus?: number;
    /**
     * bytes or e.g. "256MiB", default 256MiB
     */
    memory?: number | string;
    /**
     * bytes or e.g. "1GiB", default 0
     */
    storage?: number | string;
    /**
     * labels the provider must carry exactly
     */
    labels?: Record<string, string>;
    /**
     * (1.5) the most to pay, in credits: a provider whose
     * `start`, `cpuHour` or `envHour` rate is above the cap's is not matched (a rate left out caps at 0)
     */
    maxPrice?: import("./money.js").PriceOptions;
};
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
export declare function demandMessage(demand?: DemandOptions): {
    cpus: number;
    memory: number;
    storage: number;
    labels: Record<string, string>;
    max_price?: import("./money.js").WirePrice;
};
export type ResourcesOptions = {
    /**
     * CPUs (fractions allowed), default 0
     */
    cpus?: number;
    /**
     * bytes or e.g. "256MiB", default 0
     */
    memory?: number | string;
    /**
     * bytes or e.g. "1GiB", default 0
     */
    storage?: number | string;
};
/**
 * A live connection to the hub as a requestor. Get one from `connect()`.
 *
 * `connection` is to `hubs.current`. With `dial`, a connection that drops is dialled again,
 * to the hubs of `hubs` in its order (see the module's comment).
 */
export declare class Requestor {
    /** @type {ConnectionClosedError | null} why this requestor has no connection for good (closed, or no reconnect in time) */
    gone: ConnectionClosedError | null;
    /** @param {Connection} connection @param {Platform} platform @param {HubRing} hubs @param {Dial | null} [dial] */
    constructor(connection: Connection, platform: Platform, hubs: HubRing, dial?: Dial | null);
    /** The connection of the moment (a reconnect replaces it). */
    get connection(): Connection;
    /** The URL of the hub this requestor is on (while it reconnects, the one it was on). */
    get url(): string;
    /** Whether the connection dropped and is being dialled again. */
    get reconnecting(): boolean;
    /** Wait out a reconnect: true when the connection is back, false when it is gone for good. */
    reconnected(): Promise<boolean>;
    /** The activities this requestor holds now. */
    get activities(): Activity[];
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
    rent(options: RentOptions): Promise<Activity>;
    /**
     * Keep `replicas` copies of `command` running on distinct providers, each healthy by
     * `health` (`Http(port, path)` or `Tcp(port)`); resolves once every one is healthy. A
     * replica whose health fails, whose provider is lost, or whose command ends past what
     * `restart` restarts in place is replaced on another provider (rented, `setup(act)`,
     * started); `onEvent` hears each event. See `src/service.js`.
     * @param {import("./service.js").ServiceOptions} options
     * @returns {Promise<Service>}
     */
    service(options: import("./service.js").ServiceOptions): Promise<Service>;
    /**
     * The providers the hub knows (their offer, what is free now, the images they hold), by
     * name: only those holding `image`, carrying `labels` and with at least `free` capacity
     * left; at most `limit` (1 to 1000, default 100) of them.
     * @param {MarketOptions} [options]
     * @returns {Promise<import("../protocol.js").ProviderInfo[]>}
     */
    market(options?: MarketOptions): Promise<import("../protocol.js").ProviderInfo[]>;
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
    listActivities(options?: ActivitiesOptions): Promise<ActivityInfo[]>;
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
    pushImage(local: ImageArchiveSource, options?: PushOptions): Promise<PushedImage>;
    /**
     * The images in the hub's store this requestor may see (its own, and those shared with
     * it), most recently used first, with the bytes they hold and the store's limit.
     * UnsupportedVersionError from a hub of protocol 1.0.
     * @returns {Promise<ImageList>}
     */
    listImages(): Promise<ImageList>;
    /**
     * Remove an image this requestor pushed (by tag or digest) from the hub's store.
     * ImageNotFoundError when the store holds no such image it may see; UnauthorizedError for
     * one shared with it that it did not push; UnsupportedVersionError from a hub of protocol 1.0.
     * @param {string} ref
     */
    removeImage(ref: string): Promise<void>;
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
    shareImage(ref: string, options: ShareOptions): Promise<void>;
    /**
     * A job not started yet: follow its `events()` or `onEvent`, then `run()` it (see
     * `src/executor.js` for the semantics). Options: `image`, `demand`, `maxProviders` (4),
     * `retries` (2), `taskTimeoutMs`, `startTimeoutMs` (60 s), `setup`, `teardown`,
     * `returnExceptions`, `onEvent`, `signal`. The parts are read as the job's slots free up.
     * @template P, R
     * @param {import("./executor.js").Worker<P, R>} worker
     * @param {Iterable<P>} parts
     * @param {import("./executor.js").JobOptions} options
     * @returns {Job<P, R>}
     */
    job<P, R>(worker: import("./executor.js").Worker<P, R>, parts: Iterable<P>, options: import("./executor.js").JobOptions): Job<P, R>;
    /**
     * The old order of {@link Requestor#job}, accepted for one release with a deprecation warning.
     * @deprecated call `job(worker, parts, options)`
     * @template P, R
     * @param {Iterable<P>} parts
     * @param {import("./executor.js").Worker<P, R>} worker
     * @param {import("./executor.js").JobOptions} options
     * @returns {Job<P, R>}
     */
    job<P, R>(parts: Iterable<P>, worker: import("./executor.js").Worker<P, R>, options: import("./executor.js").JobOptions): Job<P, R>;
    /**
     * Run `worker(activity, part, context)` for every part on rented activities and resolve
     * to the results in input order. Rejects with TaskFailedError when a task fails for good.
     * @template P, R
     * @param {import("./executor.js").Worker<P, R>} worker
     * @param {Iterable<P>} parts
     * @param {import("./executor.js").JobOptions} options
     * @returns {Promise<R[]>}
     */
    map<P, R>(worker: import("./executor.js").Worker<P, R>, parts: Iterable<P>, options: import("./executor.js").JobOptions): Promise<R[]>;
    /**
     * The old order of {@link Requestor#map}, accepted for one release with a deprecation warning.
     * @deprecated call `map(worker, parts, options)`
     * @template P, R
     * @param {Iterable<P>} parts
     * @param {import("./executor.js").Worker<P, R>} worker
     * @param {import("./executor.js").JobOptions} options
     * @returns {Promise<R[]>}
     */
    map<P, R>(parts: Iterable<P>, worker: import("./executor.js").Worker<P, R>, options: import("./executor.js").JobOptions): Promise<R[]>;
    /**
     * Like {@link Requestor#map}, but yield `[index, result]` as each task finishes.
     * Stopping the iteration early ends the job and releases its activities.
     * @template P, R
     * @param {import("./executor.js").Worker<P, R>} worker
     * @param {Iterable<P>} parts
     * @param {import("./executor.js").JobOptions} options
     * @returns {AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>}
     */
    mapUnordered<P, R>(worker: import("./executor.js").Worker<P, R>, parts: Iterable<P>, options: import("./executor.js").JobOptions): AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>;
    /**
     * The old order of {@link Requestor#mapUnordered}, accepted for one release with a deprecation warning.
     * @deprecated call `mapUnordered(worker, parts, options)`
     * @template P, R
     * @param {Iterable<P>} parts
     * @param {import("./executor.js").Worker<P, R>} worker
     * @param {import("./executor.js").JobOptions} options
     * @returns {AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>}
     */
    mapUnordered<P, R>(parts: Iterable<P>, worker: import("./executor.js").Worker<P, R>, options: import("./executor.js").JobOptions): AsyncGenerator<[number, R | import("./errors.js").TaskFailedError], void, void>;
    /**
     * (1.5) Call `listener` with what each priced activity of this requestor owes, every time
     * the hub captures it (at least every minute while it runs, and once, `final`, at its end,
     * also after its release).
     * @param {(cost: CostInfo) => void} listener
     * @returns {() => void} stops the calls
     */
    onCost(listener: (cost: CostInfo) => void): () => void;
    /**
     * (1.5) This requestor's account at the hub: what is available, held and spent, in credits.
     * UnsupportedVersionError from a hub below 1.5.
     * @returns {Promise<Balance>}
     */
    balance(): Promise<Balance>;
    /**
     * (1.5) The latest transactions of this requestor's account, newest first (an admin's:
     * `account`'s, or every account's), at most `limit`; `matched` counts them all.
     * UnsupportedVersionError from a hub below 1.5.
     * @param {LedgerOptions} [options]
     * @returns {Promise<{transactions: LedgerTransaction[], matched: number}>}
     */
    ledger(options?: LedgerOptions): Promise<{
        transactions: LedgerTransaction[];
        matched: number;
    }>;
    /**
     * (1.5) Tell the hub that the result of activity `lost` disagreed with those of the
     * activities `agreed` (at least two, on other providers, agreeing among themselves): it
     * counts against `lost`'s provider's reputation and the requestor is paid back what `lost`
     * cost. Jobs with `verify` send this themselves. ActivityError (code `unknown_activity`)
     * for an activity not this requestor's; UnsupportedVersionError from a hub below 1.5.
     * @param {string} lost
     * @param {Iterable<string>} agreed
     */
    reportVerdict(lost: string, agreed: Iterable<string>): Promise<void>;
    /**
     * (1.6) Tell the hub how an attempt of a job's task went, for its dashboard: it `started`
     * on `activity`, or ended (`done`, `retried`, `failed`) for `reason` having moved `bytes`.
     * Sent without waiting, and no reply comes; a job sends these itself for each attempt's
     * start and end. Dropped, silently, when the hub is older than 1.6, while the connection is
     * down or being dialled again, while the socket is backed up, and when a field is out of
     * the protocol's bounds: a report never slows or fails a job.
     * @param {TaskReportFields} report
     */
    reportTask({ group, task, attempt, state, activity, reason, bytes }: TaskReportFields): void;
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
    estimate(demand: DemandOptions, options: EstimateOptions): Promise<number>;
    /**
     * Release every activity still held and close the connection, for good (no reconnect:
     * the hub ends the session at once). A reconnect under way is given up: the hub destroys
     * what it held once its grace period ends.
     */
    close(): Promise<void>;
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
export declare function connectWith(platform: Platform, url: string | string[], options?: ConnectOptions): Promise<Requestor>;
