/**
 * Credits as the market counts them: integer micro-credits, and the linear price of an
 * activity (mirrors `python/kiln/protocol/money.py`, function for function).
 *
 * A credit is {@link MICRO} micro-credits; every amount on the wire and in the hub's ledger
 * is a whole number of micro-credits (never a float), so sums are exact. People write
 * credits (`0.05`, `"1.5"`); {@link toMicro} takes those, refusing anything finer than a
 * micro-credit, and {@link formatCredits} shows an amount back.
 *
 * An activity's price is linear: a `start` fee once, `cpu_hour` per hour of CPU time its
 * container used, `env_hour` per hour it is held (wall time), each in micro-credits as the
 * wire carries them. {@link due} is what an activity owes; {@link worstCase} what it could
 * owe at most with every CPU busy all the time (what the hub holds). Both count exactly
 * (the binary value of each float, as Python's `Fraction`), so both languages agree to the
 * last micro-credit. Nothing here does I/O.
 * @module
 */
/** Micro-credits in a credit. */
export declare const MICRO = 1000000;
/** The largest amount a message carries (a billion credits), in micro-credits. */
export declare const MAX_MICRO: number;
export type WirePrice = {
    start: number;
    cpu_hour: number;
    env_hour: number;
};
export type PriceOptions = {
    /**
     * credits once per activity
     */
    start?: number | string;
    /**
     * credits per hour of CPU time used
     */
    cpuHour?: number | string;
    /**
     * credits per hour the container is held
     */
    envHour?: number | string;
};
/**
 * `value` credits (a number or its text: `0.05`, `"1.5"`) as micro-credits. A number is taken
 * as written (0.1 is one tenth, not the binary fraction nearest it).
 *
 * Throws {@link UsageError} for a negative amount, one finer than a micro-credit, one over
 * a billion credits, or not a number.
 * @param {unknown} value
 * @param {string} [what] what the amount is, for the message
 * @returns {number}
 */
export declare function toMicro(value: unknown, what?: string): number;
/**
 * `micro` micro-credits as credits, with no trailing zeros (`1500000` -> `"1.5"`).
 * @param {number} micro
 * @returns {string}
 */
export declare function formatCredits(micro: number): string;
/**
 * `micro` micro-credits as a number of credits (for display and sums; the wire keeps micro-credits).
 * @param {number} micro
 */
export declare const credits: (micro: number) => number;
/**
 * A price or cap written in credits, as the wire's micro-credits; a UsageError for a bad rate.
 * @param {PriceOptions} price
 * @param {string} [what] what the price is, for the messages
 * @returns {WirePrice}
 */
export declare function priceMessage(price: PriceOptions, what?: string): WirePrice;
/**
 * The CPU seconds an activity may be billed: what its provider reported, at most the CPUs
 * rented times the wall time held.
 * @param {number} cpuSeconds @param {number} cpus @param {number} seconds
 */
export declare function billableCpu(cpuSeconds: number, cpus: number, seconds: number): number;
/**
 * What an activity owes, in micro-credits (rounded down), after `seconds` held with
 * `cpuSeconds` billable (see {@link billableCpu}).
 * @param {WirePrice} price @param {number} seconds @param {number} cpuSeconds
 * @returns {number}
 */
export declare function due(price: WirePrice, seconds: number, cpuSeconds: number): number;
/**
 * The most an activity with `cpus` rented could owe after `seconds` (rounded up), in micro-credits.
 * @param {WirePrice} price @param {number} cpus @param {number} seconds
 * @returns {number}
 */
export declare function worstCase(price: WirePrice, cpus: number, seconds: number): number;
/**
 * How long (seconds) an activity with `cpus` rented may be held before it could owe more
 * than `amount` micro-credits: Infinity for a price with no rates, 0 when `amount` cannot
 * cover the start.
 * @param {WirePrice} price @param {number} cpus @param {number} amount
 */
export declare function secondsCovered(price: WirePrice, cpus: number, amount: number): number;
/** Whether every rate of `price` is at most `cap`'s. @param {WirePrice} price @param {WirePrice} cap */
export declare function within(price: WirePrice, cap: WirePrice): boolean;
/** Whether `price` charges nothing (null: a free provider). @param {WirePrice | null | undefined} price */
export declare function isFree(price: WirePrice | null | undefined): boolean;
export type Fraction = {
    n: bigint;
    d: bigint;
};
