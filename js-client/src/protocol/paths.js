/**
 * Container paths: the one rule of protocol kiln.v1 that JSON Schema cannot say.
 *
 * The schema marks every container path with `"format": "container-path"`; this module
 * (and `python/kiln/protocol/paths.py`, its twin) says what that format means. The
 * generated validators call {@link pathProblem} for that format, and the vectors in
 * `protocol/v1/vectors/` hold both languages to the same verdicts.
 * @module
 */

/** The JSON Schema `format` of a container path. */
export const FORMAT = "container-path";
export const MAX_PATH_LENGTH = 4096;

/**
 * Why `path` is not a container path, or null when it is one.
 *
 * A container path is absolute, normalized (no `//`, no `/./`, no trailing `/` except
 * `/` itself), free of `..` components and of NUL bytes.
 * @param {string} path
 * @returns {string | null}
 */
export function pathProblem(path) {
  if (!path.startsWith("/")) return `container path must be absolute: ${path}`;
  if (path.includes("\0")) return "container path contains a NUL byte";
  if (path.split("/").includes("..")) return `container path must not contain '..': ${path}`;
  if (path !== "/" && normpath(path) !== path.replace(/\/+$/, "")) return `container path is not normalized: ${path}`;
  return null;
}

/**
 * Python's `posixpath.normpath` for the paths that reach it (absolute, no `..`).
 * @param {string} path
 */
function normpath(path) {
  // POSIX keeps exactly two leading slashes; one or three-plus collapse to one.
  const leading = path.startsWith("//") && !path.startsWith("///") ? "//" : "/";
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  return leading + parts.join("/");
}
