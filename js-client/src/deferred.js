/**
 * Small promise tools: a deferred that never reports an unhandled rejection, a race of a
 * promise against an AbortSignal, a sleep an AbortSignal ends, and a bounded wait that
 * leaves no timer behind.
 * @module
 */

import { CancelledError } from "./errors.js";

/** @template T */
export class Deferred {
  constructor() {
    /** @type {(value: T) => void} */
    this.resolve = () => {};
    /** @type {(error: unknown) => void} */
    this.reject = () => {};
    this.settled = false;
    /** @type {Promise<T>} */
    this.promise = new Promise((resolve, reject) => {
      this.resolve = (value) => {
        this.settled = true;
        resolve(value);
      };
      this.reject = (error) => {
        this.settled = true;
        reject(error);
      };
    });
    // Whoever awaits it still sees the rejection; nobody awaiting it is not an error.
    this.promise.catch(() => {});
  }
}

/**
 * The error to throw when `signal` fired: a {@link CancelledError} whose cause is the reason.
 * @param {AbortSignal} signal
 * @param {string} what
 */
export function cancelledBy(signal, what) {
  return new CancelledError(`${what} was cancelled`, { cause: signal.reason });
}

/**
 * Throw a {@link CancelledError} now if `signal` has fired.
 * @param {AbortSignal | undefined} signal
 * @param {string} what
 */
export function throwIfAborted(signal, what) {
  if (signal?.aborted) throw cancelledBy(signal, what);
}

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
export async function raceAbort(promise, signal, what, onAbort = () => {}) {
  if (signal === undefined) return promise;
  throwIfAborted(signal, what);
  /** @type {() => void} */
  let listener = () => {};
  const aborted = new Promise((_, reject) => {
    listener = () => {
      onAbort();
      reject(cancelledBy(signal, what));
    };
    signal.addEventListener("abort", listener, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener("abort", listener);
  }
}

/**
 * Wait `ms`: true then, or false as soon as `signal` aborts (its timer cleared, none left).
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<boolean>}
 */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const abort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/**
 * Whether `promise` settles (either way) within `ms`. The timer is cleared as soon as it
 * does, so a bounded wait never keeps a process alive.
 * @param {Promise<unknown>} promise
 * @param {number} ms
 * @returns {Promise<boolean>}
 */
export function settlesWithin(promise, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const settled = () => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(settled, settled);
  });
}
