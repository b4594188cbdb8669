/**
 * Sizes as people write them ("256MiB", "2GiB", "1.5G", 1024) turned into bytes
 * (`python/kiln/protocol/sizes.py`).
 * @module
 */

import { UsageError } from "./errors.js";

/** @type {Record<string, number>} */
const UNITS = {
  "": 1, b: 1,
  k: 1000, kb: 1000, m: 1000 ** 2, mb: 1000 ** 2, g: 1000 ** 3, gb: 1000 ** 3, t: 1000 ** 4, tb: 1000 ** 4,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3, ti: 1024 ** 4, tib: 1024 ** 4,
};
const SIZE = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$/;

/**
 * Bytes in `value`: a number, or a string with an optional SI or IEC unit.
 * Throws {@link UsageError} for negative numbers, unknown units or bad text.
 * @param {number | string} value
 * @returns {number}
 */
export function parseSize(value) {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) throw new UsageError(`a size must be a number >= 0, not ${value}`);
    return Math.trunc(value);
  }
  if (typeof value !== "string") throw new UsageError(`not a size: ${JSON.stringify(value)}`);
  const match = SIZE.exec(value);
  if (match === null) {
    throw new UsageError(`not a size: '${value}' (write e.g. 512MiB, 2GiB or a number of bytes)`);
  }
  const factor = UNITS[match[2].toLowerCase()];
  if (factor === undefined) {
    throw new UsageError(`unknown size unit '${match[2]}' in '${value}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)`);
  }
  return Math.trunc(Number(match[1]) * factor);
}
