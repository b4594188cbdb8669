/**
 * Sizes as people write them ("256MiB", "2GiB", "1.5G", 1024) turned into bytes
 * (`python/kiln/protocol/sizes.py`).
 * @module
 */
/**
 * Bytes in `value`: a number, or a string with an optional SI or IEC unit.
 * Throws {@link UsageError} for negative numbers, unknown units or bad text.
 * @param {number | string} value
 * @returns {number}
 */
export declare function parseSize(value: number | string): number;
