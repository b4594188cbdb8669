/**
 * Every JSON message of protocol kiln.v1, checked as the pydantic models in
 * `python/kiln/protocol/messages.py` check them: by validators generated from
 * `protocol/v1/schema.json` (`make schema`; see `scripts/generate.mjs`), with strict
 * types (no string-to-number coercion, a bool is not a number), no extra fields, the
 * same ranges and patterns, and numbers judged by value (`7.0` is the integer 7).
 *
 * Call {@link parse} on the text of a WebSocket text frame to get a message (a plain
 * deep-frozen object, defaults filled in) or a {@link ProtocolViolation}; call
 * {@link serialize} to get the text to send. Nothing in this module does I/O.
 *
 * One known difference from Python, from `JSON.parse`: integers beyond 2^53 lose precision.
 * @module
 */

import { ErrorCode } from "./codes.js";
import { VALIDATORS } from "./generated/validators.js";
import { FORMAT, pathProblem } from "./paths.js";
import { ProtocolViolation } from "./violation.js";

export { MAX_PATH_LENGTH, pathProblem as containerPathProblem } from "./paths.js";

/** @typedef {import("../../types/protocol.js").Message} Message */
/** @typedef {import("../../types/protocol.js").MessageType} MessageType */
/** @typedef {import("./generated/validators.js").ValidationProblem} ValidationProblem */

export const PROTOCOL_NAME = "kiln.v1";
export const PROTOCOL_VERSION = "1.0";
export const MAJOR_VERSION = 1;

export const MAX_ID = 2 ** 31 - 1;

/** Most problems one violation's message lists (as the Python side). */
const MAX_PROBLEMS = 5;

/** Every message `type`. */
export const MESSAGE_TYPES = Object.freeze(new Set(/** @type {MessageType[]} */ (Object.keys(VALIDATORS))));

/** The types that end a request (its final reply, matched by `re`). */
export const FINAL_REPLIES = Object.freeze(
  new Set(/** @type {MessageType[]} */ (["done", "error", "exec_result", "rented", "market_info"])),
);

/**
 * Check a decoded JSON value as a message; return a deep-frozen copy, defaults filled in.
 *
 * Throws {@link ProtocolViolation} with code `bad_message`, `unknown_type` or `bad_path`.
 * @param {unknown} raw
 * @returns {Message}
 */
export function validate(raw) {
  return check(copyJson(raw));
}

/**
 * Parse and validate one text frame.
 *
 * Throws {@link ProtocolViolation} with code `bad_json`, `unknown_type`, `bad_path` or
 * `bad_message`; its `re` is the message's `id` when one could be read.
 * @param {string} text
 * @returns {Message}
 */
export function parse(text) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ProtocolViolation(ErrorCode.BAD_JSON, `not valid JSON: ${/** @type {Error} */ (e).message}`);
  }
  return check(raw);
}

/**
 * The JSON text of `message`, fields left at `null` or `undefined` omitted.
 * The message is validated first, so a bad one is never sent (a {@link ProtocolViolation}).
 * @param {Message | Record<string, unknown>} message
 * @returns {string}
 */
export function serialize(message) {
  const text = JSON.stringify(message, omitNull);
  return JSON.stringify(check(JSON.parse(text)), omitNull);
}

/** @param {string} _key @param {unknown} value */
const omitNull = (_key, value) => (value === null ? undefined : value);

/**
 * Validate `raw` in place (the validators fill in defaults), then freeze it.
 * @param {unknown} raw a value nobody else holds
 * @returns {Message}
 */
function check(raw) {
  if (!isObject(raw)) throw new ProtocolViolation(ErrorCode.BAD_MESSAGE, "a message must be a JSON object");
  const re = requestIdOf(raw);
  const kind = raw.type;
  if (typeof kind !== "string") {
    throw new ProtocolViolation(ErrorCode.BAD_MESSAGE, "a message needs a string field 'type'", re);
  }
  if (!Object.hasOwn(VALIDATORS, kind)) {
    throw new ProtocolViolation(ErrorCode.UNKNOWN_TYPE, `unknown message type '${kind.slice(0, 64)}'`, re);
  }
  // Each validator guards its own type; with `kind` known only as one of them, a Message.
  const validator = /** @type {import("./generated/validators.js").Validator<Message>} */ (
    VALIDATORS[/** @type {MessageType} */ (kind)]
  );
  if (!validator(raw)) throw violation(kind, raw, validator.errors ?? [], re);
  return deepFreeze(raw);
}

/**
 * The violation that ajv's `errors` on `message` amount to, judged as pydantic judges.
 * @param {string} kind
 * @param {Record<string, unknown>} message
 * @param {ValidationProblem[]} errors
 * @param {number | null} re
 */
function violation(kind, message, errors, re) {
  // Left out as saying nothing more: of `X | None` (pydantic's "X, or null") ajv reports
  // both branches of the anyOf and the anyOf itself, and only X's problems count for a
  // value that is not null; a bad object key has its own problem beside the summary.
  const problems = errors.filter(
    (e) =>
      e.keyword !== "anyOf" && e.keyword !== "propertyNames" && !(e.keyword === "type" && e.params.type === "null"),
  );
  // pydantic checks a path only once it is a string of the right length, while ajv checks
  // the format beside the other keywords: a path failing anything else is no bad path.
  const badPath = problems.some(
    (e) => isPathProblem(e) && problems.every((other) => other === e || other.instancePath !== e.instancePath),
  );
  const details = problems
    .slice(0, MAX_PROBLEMS)
    .map((e) => describe(e, message))
    .join("; ");
  const code = badPath ? ErrorCode.BAD_PATH : ErrorCode.BAD_MESSAGE;
  return new ProtocolViolation(code, `invalid '${kind}' message: ${details}`, re);
}

/** @param {ValidationProblem} e */
const isPathProblem = (e) => e.keyword === "format" && e.params.format === FORMAT;

/**
 * One problem as `field.path: what is wrong` (pydantic's `loc: msg`).
 * @param {ValidationProblem} e
 * @param {Record<string, unknown>} message
 */
function describe(e, message) {
  // instancePath is a JSON Pointer: "/demand/labels", with "~1" for "/" and "~0" for "~".
  const loc = e.instancePath
    .split("/")
    .slice(1)
    .map((key) => key.replaceAll("~1", "/").replaceAll("~0", "~"));
  if (e.propertyName !== undefined) loc.push(e.propertyName, "[key]"); // as pydantic places a bad key
  let what = e.message ?? e.keyword;
  if (e.keyword === "required") {
    loc.push(e.params.missingProperty);
    what = "field required";
  } else if (e.keyword === "additionalProperties") {
    loc.push(e.params.additionalProperty);
    what = "extra field not permitted";
  } else if (e.keyword === "enum") {
    what = `must be one of ${e.params.allowedValues.map((/** @type {unknown} */ v) => JSON.stringify(v)).join(", ")}`;
  } else if (isPathProblem(e)) {
    what = pathProblem(loc.reduce((/** @type {any} */ value, key) => value[key], message)) ?? what;
  }
  return `${loc.join(".") || "(message)"}: ${what}`;
}

/**
 * @param {unknown} value
 * @returns {value is Record<string, unknown>}
 */
const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * The `id` of a message, when it is a usable request id (for the `re` of the error reply).
 * @param {Record<string, unknown>} raw
 */
function requestIdOf(raw) {
  const id = raw.id;
  return typeof id === "number" && Number.isInteger(id) && id >= 1 && id <= MAX_ID ? id : null;
}

/**
 * A copy of the arrays and objects in `value`, so that checking it (which fills in
 * defaults and freezes) leaves the caller's value alone. Other values are no JSON
 * containers: they are kept, for the validator to judge.
 * @param {unknown} value
 * @returns {unknown}
 */
function copyJson(value) {
  if (Array.isArray(value)) return value.map(copyJson);
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, copyJson(v)]));
  return value;
}

/**
 * @template T
 * @param {T} value
 * @returns {T}
 */
function deepFreeze(value) {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
