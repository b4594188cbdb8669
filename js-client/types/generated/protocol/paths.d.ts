/**
 * Container paths: the one rule of protocol kiln.v1 that JSON Schema cannot say.
 *
 * The schema marks every container path with `"format": "container-path"`; this module
 * (and `python/kiln/protocol/paths.py`, its twin) says what that format means. The
 * generated validators call {@link pathProblem} for that format, and the vectors in
 * `protocol/v1/vectors/` hold both languages to the same verdicts.
 * @module
 */
import { MAX_PATH_LENGTH } from "./generated/limits.js";
/** The JSON Schema `format` of a container path. */
export declare const FORMAT = "container-path";
export { MAX_PATH_LENGTH };
/**
 * Why `path` is not a container path, or null when it is one.
 *
 * A container path is absolute and normalized: `/` itself, or `/` followed by
 * components separated by single slashes, none empty (no `//`, no trailing `/`), `.` or
 * `..`; it holds no NUL byte and at most 4096 characters (code points).
 * @param {string} path
 * @returns {string | null}
 */
export declare function pathProblem(path: string): string | null;
