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

import { UsageError } from "./errors.js";

/** Micro-credits in a credit. */
export const MICRO = 1_000_000;
/** The largest amount a message carries (a billion credits), in micro-credits. */
export const MAX_MICRO = 10 ** 15;
const HOUR = 3600n;

/**
 * A price's three rates in micro-credits, as the wire carries them.
 * @typedef {{start: number, cpu_hour: number, env_hour: number}} WirePrice
 */

/**
 * A price or a cap in credits, as the JS API takes it (each rate absent: 0).
 * @typedef {object} PriceOptions
 * @property {number | string} [start] credits once per activity
 * @property {number | string} [cpuHour] credits per hour of CPU time used
 * @property {number | string} [envHour] credits per hour the container is held
 */

const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

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
export function toMicro(value, what = "an amount") {
  const notCredits = () => new UsageError(`${what} is a number of credits, not ${show(value)}`);
  let text;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw notCredits();
    text = String(value); // the shortest text that reads back as this number, as Python's str()
  } else if (typeof value === "bigint") {
    text = value.toString();
  } else if (typeof value === "string") {
    text = value.trim();
  } else {
    throw notCredits();
  }
  const match = DECIMAL.exec(text);
  if (match === null || (match[2] === "" && (match[3] ?? "") === "")) throw notCredits();
  const [, sign, whole, part = "", exponent = "0"] = match;
  let digits = BigInt(`${whole}${part}` || "0");
  if (sign === "-") digits = -digits;
  const shift = Number(exponent) - part.length + 6; // micro-credits: six places to the left
  let micro;
  if (digits === 0n) {
    micro = 0n;
  } else if (shift >= 0) {
    // Past 10^31 the amount is out of range whatever its digits; no huge power is built.
    if (shift > 31) throw new UsageError(`${what} ${text} is out of range: 0 to ${MAX_MICRO / MICRO} credits`);
    micro = digits * 10n ** BigInt(shift);
  } else {
    const unit = -shift > 400 ? null : 10n ** BigInt(-shift);
    if (unit === null || digits % unit !== 0n) {
      throw new UsageError(`${what} ${text} is finer than a micro-credit (0.000001)`);
    }
    micro = digits / unit;
  }
  if (micro < 0n || micro > BigInt(MAX_MICRO)) {
    throw new UsageError(`${what} ${text} is out of range: 0 to ${MAX_MICRO / MICRO} credits`);
  }
  return Number(micro);
}

/**
 * `micro` micro-credits as credits, with no trailing zeros (`1500000` -> `"1.5"`).
 * @param {number} micro
 * @returns {string}
 */
export function formatCredits(micro) {
  const sign = micro < 0 ? "-" : "";
  const abs = BigInt(Math.abs(Math.trunc(micro)));
  const whole = abs / BigInt(MICRO);
  const part = abs % BigInt(MICRO);
  return `${sign}${whole}` + (part === 0n ? "" : `.${part.toString().padStart(6, "0")}`.replace(/0+$/, ""));
}

/**
 * `micro` micro-credits as a number of credits (for display and sums; the wire keeps micro-credits).
 * @param {number} micro
 */
export const credits = (micro) => micro / MICRO;

/**
 * A price or cap written in credits, as the wire's micro-credits; a UsageError for a bad rate.
 * @param {PriceOptions} price
 * @param {string} [what] what the price is, for the messages
 * @returns {WirePrice}
 */
export function priceMessage(price, what = "a price") {
  if (typeof price !== "object" || price === null) throw new UsageError(`${what} is an object {start, cpuHour, envHour} in credits`);
  const known = new Set(["start", "cpuHour", "envHour"]);
  for (const key of Object.keys(price)) {
    if (!known.has(key)) throw new UsageError(`${what} has no rate ${JSON.stringify(key)} (start, cpuHour, envHour)`);
  }
  return {
    start: toMicro(price.start ?? 0, `${what}'s start`),
    cpu_hour: toMicro(price.cpuHour ?? 0, `${what}'s cpuHour`),
    env_hour: toMicro(price.envHour ?? 0, `${what}'s envHour`),
  };
}

/**
 * The CPU seconds an activity may be billed: what its provider reported, at most the CPUs
 * rented times the wall time held.
 * @param {number} cpuSeconds @param {number} cpus @param {number} seconds
 */
export function billableCpu(cpuSeconds, cpus, seconds) {
  return Math.max(0, Math.min(cpuSeconds, cpus * Math.max(seconds, 0)));
}

/**
 * What an activity owes, in micro-credits (rounded down), after `seconds` held with
 * `cpuSeconds` billable (see {@link billableCpu}).
 * @param {WirePrice} price @param {number} seconds @param {number} cpuSeconds
 * @returns {number}
 */
export function due(price, seconds, cpuSeconds) {
  const rates = add(times(price.cpu_hour, exact(cpuSeconds)), times(price.env_hour, exact(Math.max(seconds, 0))));
  return price.start + Number(rates.n / (rates.d * HOUR));
}

/**
 * The most an activity with `cpus` rented could owe after `seconds` (rounded up), in micro-credits.
 * @param {WirePrice} price @param {number} cpus @param {number} seconds
 * @returns {number}
 */
export function worstCase(price, cpus, seconds) {
  const rate = add(times(price.cpu_hour, exact(cpus)), exact(price.env_hour));
  const s = exact(seconds);
  const n = rate.n * s.n;
  const d = rate.d * s.d * HOUR;
  return price.start + Number(n <= 0n ? 0n : (n + d - 1n) / d);
}

/**
 * How long (seconds) an activity with `cpus` rented may be held before it could owe more
 * than `amount` micro-credits: Infinity for a price with no rates, 0 when `amount` cannot
 * cover the start.
 * @param {WirePrice} price @param {number} cpus @param {number} amount
 */
export function secondsCovered(price, cpus, amount) {
  const rate = price.cpu_hour * cpus + price.env_hour;
  if (amount < price.start) return 0;
  if (rate === 0) return Infinity;
  return ((amount - price.start) * 3600) / rate;
}

/** Whether every rate of `price` is at most `cap`'s. @param {WirePrice} price @param {WirePrice} cap */
export function within(price, cap) {
  return price.start <= cap.start && price.cpu_hour <= cap.cpu_hour && price.env_hour <= cap.env_hour;
}

/** Whether `price` charges nothing (null: a free provider). @param {WirePrice | null | undefined} price */
export function isFree(price) {
  return price == null || (price.start === 0 && price.cpu_hour === 0 && price.env_hour === 0);
}

// --- exact fractions of floats (n / d, d a power of two) -------------------------------------

/** @typedef {{n: bigint, d: bigint}} Fraction */

/** The exact value of a finite float. @param {number} x @returns {Fraction} */
function exact(x) {
  let d = 1n;
  // Doubling a float is exact: at most 1074 steps to an integer.
  while (!Number.isInteger(x)) {
    x *= 2;
    d *= 2n;
  }
  return { n: BigInt(x), d };
}

/** @param {number} integer @param {Fraction} f @returns {Fraction} */
const times = (integer, f) => ({ n: BigInt(integer) * f.n, d: f.d });
/** @param {Fraction} a @param {Fraction} b @returns {Fraction} */
const add = (a, b) => ({ n: a.n * b.d + b.n * a.d, d: a.d * b.d });

/** @param {unknown} value */
const show = (value) => (typeof value === "string" ? `'${value}'` : typeof value === "bigint" ? `${value}n` : String(value));
