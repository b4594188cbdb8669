/**
 * Small promise tools: a deferred that never reports an unhandled rejection, a race of a
 * promise against an AbortSignal, a sleep an AbortSignal ends, and a bounded wait that
 * leaves no timer behind.
 * @module
 */
import { CancelledError } from "./errors.js";
/** @template T */
export declare class Deferred<T> {
    /** @type {(value: T) => void} */
    resolve: (value: T) => void;
    /** @type {(error: unknown) => void} */
    reject: (error: unknown) => void;
    settled: boolean;
    /** @type {Promise<T>} */
    promise: Promise<T>;
    constructor();
}
/**
 * The error to throw when `signal` fired: a {@link CancelledError} whose cause is the reason.
 * @param {AbortSignal} signal
 * @param {string} what
 */
export declare function cancelledBy(signal: AbortSignal, what: string): CancelledError;
/**
 * Throw a {@link CancelledError} now if `signal` has fired.
 * @param {AbortSignal | undefined} signal
 * @param {string} what
 */
export declare function throwIfAborted(signal: AbortSignal | undefined, what: string): void;
/**
 * `promise`, unless `signal` fires first: then `onAbort` runs and a {@link CancelledError}
 * is thrown.
 * @template T
 * @param {Promise<T>} promise
 * @param {AbortSignal | undefined} signal
 * @param {string} what
 * @param {() => void} [onAbort]
 * @returns {Promise<T>}
 */
export declare function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string, onAbort?: () => void): Promise<T>;
/**
 * Wait `ms`: true then, or false as soon as `signal` aborts (its timer cleared, none left).
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<boolean>}
 */
export declare function sleep(ms: number, signal?: AbortSignal): Promise<boolean>;
/**
 * Whether `promise` settles (either way) within `ms`. The timer is cleared as soon as it
 * does, so a bounded wait never keeps a process alive.
 * @param {Promise<unknown>} promise
 * @param {number} ms
 * @returns {Promise<boolean>}
 */
export declare function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean>;
