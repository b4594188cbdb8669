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
export const FORMAT = "container-path";
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
export function pathProblem(path) {
  if (!path.startsWith("/")) return `container path must be absolute: ${[...path].slice(0, 64).join("")}`;
  if (codePoints(path) > MAX_PATH_LENGTH) return `container path is longer than ${MAX_PATH_LENGTH} characters`;
  if (path.includes("\0")) return "container path contains a NUL byte";
  if (path === "/") return null;
  const parts = path.slice(1).split("/");
  if (parts.includes("..")) return `container path must not contain '..': ${[...path].slice(0, 256).join("")}`;
  if (parts.includes("") || parts.includes(".")) {
    return `container path is not normalized: ${[...path].slice(0, 256).join("")}`;
  }
  return null;
}

/** Code points, as Python counts a string's length. @param {string} text */
const codePoints = (text) => [...text].length;
