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
import { ActivityError } from "./errors.js";
/** Restarts in place without a passing check between, after which the replica is replaced. */
export declare const MAX_RESTARTS = 3;
/** Activities a replica may go through before its first healthy check while the service starts. */
export declare const START_ATTEMPTS = 3;
/** The latest events `svc.events` keeps. */
export declare const EVENTS_KEPT = 1000;
/** The most of a reason an event carries. */
export declare const REASON_CHARS = 300;
/** Milliseconds between checks of a replica not yet healthy. */
export declare const FIRST_PROBES_MS = 200;
/** Milliseconds a replica whose command or check failed because the requestor's connection dropped
 * waits for it to be back (the SDK itself gives up after the hub's grace period), before it is replaced. */
export declare const REJOIN_TIMEOUT_MS = 60000;
export type Restart = "no" | "on-failure" | "always";
export type EventKind = "start" | "healthy" | "failure" | "replace" | "stop";
export type ReplicaState = "renting" | "starting" | "healthy" | "stopped";
export type Action = "keep" | "restart" | "replace" | "stop";
export type CheckOptions = {
    /**
     * between two checks of a healthy replica (default 1000)
     */
    intervalMs?: number;
    /**
     * a check that takes longer fails (default 2000)
     */
    timeoutMs?: number;
    /**
     * failures in a row that replace a healthy replica (default 3)
     */
    retries?: number;
};
export type HealthCheck = Readonly<{
    kind: "tcp" | "http";
    port: number;
    path: string;
    intervalMs: number;
    timeoutMs: number;
    retries: number;
}>;
export type ServiceEvent = Readonly<{
    kind: EventKind;
    replica: number;
    time: number;
    activity: string | null;
    provider: string | null;
    reason: string;
}>;
/**
 * A health check: `port` in the container accepts a connection.
 * @param {number} port
 * @param {CheckOptions} [options]
 * @returns {HealthCheck}
 */
export declare function Tcp(port: number, options?: CheckOptions): HealthCheck;
/**
 * A health check: `GET path` on `port` answers 2xx or 3xx.
 * @param {number} port
 * @param {string} [path]
 * @param {CheckOptions} [options]
 * @returns {HealthCheck}
 */
export declare function Http(port: number, path?: string, options?: CheckOptions): HealthCheck;
/**
 * One replica's state machine: pure, fed what the I/O observed (at `now`, the caller's
 * monotonic milliseconds), answering an {@link Action} and the events to tell.
 */
export declare class Replica {
    index: number;
    restart: Restart;
    retries: number;
    startTimeoutMs: number;
    /** @type {ReplicaState} */
    state: ReplicaState;
    /** @type {string | null} */
    activity: string | null;
    /** @type {string | null} */
    provider: string | null;
    /** @type {string | null} the provider it was last replaced from: the next rent excludes it */
    left: string | null;
    failures: number;
    exits: number;
    fruitless: number;
    healthyOnce: boolean;
    restarts: number;
    replacements: number;
    since: number;
    /**
     * @param {number} index
     * @param {{restart: Restart, retries: number, startTimeoutMs: number, clock: [number, number]}} options
     *   `clock`: a monotonic reading and the epoch ms at the same moment (events are stamped by it)
     */
    constructor(index: number, { restart, retries, startTimeoutMs, clock }: {
        restart: Restart;
        retries: number;
        startTimeoutMs: number;
        clock: [number, number];
    });
    /**
     * Its command started on `activity` (a new one, or the same after a restart).
     * @param {string} activity @param {string} provider @param {number} now @param {string} [reason]
     * @returns {ServiceEvent[]}
     */
    started(activity: string, provider: string, now: number, reason?: string): ServiceEvent[];
    /**
     * A health check ended: passed (`ok`) or failed for `reason`.
     * @param {boolean} ok @param {string} reason @param {number} now
     * @returns {[Action, ServiceEvent[]]}
     */
    checked(ok: boolean, reason: string, now: number): [Action, ServiceEvent[]];
    /**
     * Its command ended with `exitCode` (null: no code); `reason` its last words.
     * @param {number | null} exitCode @param {string} reason @param {number} now
     * @returns {[Action, ServiceEvent[]]}
     */
    exited(exitCode: number | null, reason: string, now: number): [Action, ServiceEvent[]];
    /**
     * Its command ended because the requestor's connection to the hub dropped, and the hub kept its
     * activity: it starts again in place, neither a failed check nor a restart towards {@link MAX_RESTARTS}.
     * @param {string} reason @param {number} now
     * @returns {[Action, ServiceEvent[]]}
     */
    interrupted(reason: string, now: number): [Action, ServiceEvent[]];
    /**
     * Its activity is gone (provider lost), or setting it up or starting its command failed.
     * @param {string} reason @param {number} now
     * @returns {[Action, ServiceEvent[]]}
     */
    lost(reason: string, now: number): [Action, ServiceEvent[]];
    /**
     * A rent for it failed: it stays `renting` and is rented again later.
     * @param {string} reason @param {number} now
     * @returns {ServiceEvent[]}
     */
    rentFailed(reason: string, now: number): ServiceEvent[];
    /**
     * The service stops it.
     * @param {string} reason @param {number} now
     * @returns {ServiceEvent[]}
     */
    stop(reason: string, now: number): ServiceEvent[];
    /** Whether it went through {@link START_ATTEMPTS} activities or rents without ever being healthy. */
    get givenUp(): boolean;
}
/** A service could not start: a replica never became healthy on {@link START_ATTEMPTS} activities. */
export declare class ServiceFailedError extends ActivityError {
}
/**
 * Whether an HTTP status line says 2xx or 3xx, and if not why.
 * @param {string} line
 * @returns {[boolean, string]}
 */
export declare function statusOk(line: string): [boolean, string];
export type ServiceOptions = {
    image: string;
    demand?: import("./requestor.js").DemandOptions;
    /**
     * run with `stream` semantics until the service stops
     */
    command: string[];
    /**
     * those `forward` may carry (default: the health check's)
     */
    ports?: number[];
    /**
     * `Http(port, path)` or `Tcp(port)`
     */
    health: HealthCheck;
    /**
     * (default 1)
     */
    replicas?: number;
    /**
     * (default "on-failure")
     */
    restart?: Restart;
    /**
     * put a new replica's inputs in
     */
    setup?: (act: import("./activity.js").Activity) => Promise<void>;
    /**
     * the command's environment
     */
    env?: Record<string, string>;
    onEvent?: (event: ServiceEvent) => void;
    /**
     * a replica not healthy this long after its start is replaced (default 60000)
     */
    startTimeoutMs?: number;
};
export type ReplicaStatus = Readonly<{
    index: number;
    state: ReplicaState;
    activity: import("./activity.js").Activity | null;
    provider: string | null;
    restarts: number;
    replacements: number;
}>;
/** Replicas of a command kept running and healthy. Get one from `requestor.service()`. */
export declare class Service {
    /** @type {number[]} */
    ports: number[];
    /** @type {ServiceEvent[]} what happened, oldest first (the latest {@link EVENTS_KEPT}) */
    events: ServiceEvent[];
    /**
     * @param {import("./requestor.js").Requestor} requestor
     * @param {ServiceOptions} options
     */
    constructor(requestor: import("./requestor.js").Requestor, options: ServiceOptions);
    /** @returns {ReplicaStatus[]} each replica now, by index */
    get replicas(): ReplicaStatus[];
    /** @returns {import("./activity.js").Activity[]} the activities of the replicas healthy now */
    healthy(): import("./activity.js").Activity[];
    /** @returns {import("./activity.js").Activity[]} the healthy activities in the order a new connection tries them */
    pick(): import("./activity.js").Activity[];
    /**
     * Start every replica and wait until each is healthy; rejects with ServiceFailedError
     * (every replica stopped) when one never becomes healthy.
     * @returns {Promise<Service>}
     */
    start(): Promise<Service>;
    /** Stop every replica, release its activity, and close the service's forwards. Safe to call twice. */
    stop(): Promise<void>;
    /**
     * (Node) Listen on `host:localPort` (0: a free port) and carry each connection accepted
     * there to `port` of a healthy replica, the next in turn (one that refuses: the next after
     * it). Resolves once listening to `{port, host, close()}`; `stop()` closes it too.
     * @param {number} port
     * @param {import("./ports.js").ForwardOptions} [options]
     * @returns {Promise<import("./ports.js").Forward>}
     */
    forward(port: number, options?: import("./ports.js").ForwardOptions): Promise<import("./ports.js").Forward>;
}
/**
 * Check `health` once on `act`: whether it passed, and if not why. Works with Node's Duplex
 * and with the browser's socket object (`write()` and `read()` promises, `close()`).
 * @param {import("./activity.js").Activity} act
 * @param {HealthCheck} health
 * @returns {Promise<[boolean, string]>}
 */
export declare function probe(act: import("./activity.js").Activity, health: HealthCheck): Promise<[boolean, string]>;
