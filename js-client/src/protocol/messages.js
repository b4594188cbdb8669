/**
 * Every JSON message of protocol kiln.v1, checked as the pydantic models in
 * `python/kiln/protocol/messages.py` check them: by validators generated from
 * `protocol/v1/schema.json` (`make schema`; see `scripts/generate.mjs`), with strict
 * types (no string-to-number coercion, a bool is not a number), no extra fields, the
 * same ranges and patterns, and numbers judged by value (`7.0` is the integer 7).
 *
 * Call {@link parse} on the text of a WebSocket text frame to get a message (a plain
 * deep-frozen object, defaults filled in) or a {@link RemoteProtocolError}: the peer broke
 * the protocol. Call {@link build} on a message this side means to send (an invalid one is
 * a {@link LocalProtocolError}), and {@link serialize} to get its text. Nothing in this
 * module does I/O.
 *
 * One known difference from Python, from `JSON.parse`: integers beyond 2^53 lose precision.
 * @module
 */

import { ErrorCode } from "./generated/constants.js";
import { MAX_EXCLUDE, MAX_ID, MAX_TEXT } from "./generated/limits.js";
import { VALIDATORS } from "./generated/validators.js";
import { LocalProtocolError, RemoteProtocolError } from "./errors.js";
import { FORMAT, pathProblem } from "./paths.js";

export { MAX_PATH_LENGTH, pathProblem as containerPathProblem } from "./paths.js";

/** @typedef {import("../../types/protocol.js").Message} Message */
/** @typedef {import("../../types/protocol.js").MessageType} MessageType */
/** @typedef {import("./generated/validators.js").ValidationProblem} ValidationProblem */

// The protocol's version and bounds, generated from the schema: MAX_EXCLUDE is the most
// providers one `rent` may pass over, MAX_TEXT the longest free text (an error's message, a
// loss's reason) a message carries.
export { PROTOCOL_NAME, PROTOCOL_VERSION, MAJOR_VERSION, MINOR_VERSION } from "./generated/constants.js";
export { MAX_ID, MAX_EXCLUDE, MAX_TEXT };

/** Most problems one violation's message lists (as the Python side). */
const MAX_PROBLEMS = 5;

/** Every message `type`. */
export const MESSAGE_TYPES = Object.freeze(new Set(/** @type {MessageType[]} */ (Object.keys(VALIDATORS))));

/** The types that end a request (its final reply, matched by `re`). */
export const FINAL_REPLIES = Object.freeze(
  new Set(
    /** @type {MessageType[]} */ ([
      "done", "error", "exec_result", "rented", "market_info", "image_pushed", "image_list", "activity_list",
    ]),
  ),
);
/** The types that answer a request before its final reply (matched by `re`). */
export const INTERIM_REPLIES = Object.freeze(
  new Set(/** @type {MessageType[]} */ (["download_info", "want", "rent_progress"])),
);

/**
 * A message this side means to send, checked: a deep-frozen copy of `raw`, fields left
 * at `null` or `undefined` omitted and defaults filled in.
 *
 * Throws {@link LocalProtocolError} (`bad_message`, `unknown_type` or `bad_path`): an
 * invalid message is never sent.
 * @param {Message | Record<string, unknown>} raw
 * @returns {Message}
 */
export function build(raw) {
  // Through JSON and back: a plain copy, as the peer would read it.
  return check(JSON.parse(JSON.stringify(raw, omitNull)), "local");
}

/**
 * Parse and validate one text frame from the peer.
 *
 * Throws {@link RemoteProtocolError} with code `bad_json`, `unknown_type`, `bad_path` or
 * `bad_message`; its `re` is the message's `id` when one could be read, so the error
 * reply can name the request.
 * @param {string} text
 * @returns {Message}
 */
export function parse(text) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new RemoteProtocolError(`not valid JSON: ${/** @type {Error} */ (e).message}`, { code: ErrorCode.BAD_JSON });
  }
  return check(raw, "remote");
}

/**
 * The JSON text of `message`, fields left at `null` or `undefined` omitted. The message
 * is checked first ({@link build}), so a bad one is never sent.
 * @param {Message | Record<string, unknown>} message
 * @returns {string}
 */
export function serialize(message) {
  return JSON.stringify(build(message), omitNull);
}

/**
 * `text` made fit for a message's free-text field (an error's message): at most `limit`
 * characters (code points, as the schema counts them) and no lone surrogate, which
 * UTF-8 cannot carry (as `clip` in `python/kiln/protocol/messages.py`).
 * @param {string} text
 * @param {number} [limit]
 */
export function clip(text, limit = MAX_TEXT) {
  const chars = [...text];
  const cut = chars.length > limit ? chars.slice(0, limit - 1).join("") + "\u2026" : text;
  return cut.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/** @param {string} _key @param {unknown} value */
const omitNull = (_key, value) => (value === null ? undefined : value);

/**
 * Validate `raw` in place (the validators fill in defaults), then freeze it.
 * @param {unknown} raw a value nobody else holds
 * @param {"local" | "remote"} side who broke the protocol if it is invalid: this side, or the peer
 * @returns {Message}
 */
function check(raw, side) {
  if (!isObject(raw)) throw invalid(side, "a message must be a JSON object", ErrorCode.BAD_MESSAGE);
  const re = requestIdOf(raw);
  const kind = raw.type;
  if (typeof kind !== "string") throw invalid(side, "a message needs a string field 'type'", ErrorCode.BAD_MESSAGE, re);
  if (!Object.hasOwn(VALIDATORS, kind)) {
    throw invalid(side, `unknown message type '${kind.slice(0, 64)}'`, ErrorCode.UNKNOWN_TYPE, re);
  }
  // Each validator guards its own type; with `kind` known only as one of them, a Message.
  const validator = /** @type {import("./generated/validators.js").Validator<Message>} */ (
    VALIDATORS[/** @type {MessageType} */ (kind)]
  );
  if (!validator(raw)) {
    const { code, details } = judge(raw, validator.errors ?? []);
    throw invalid(side, `invalid '${kind}' message: ${details}`, code, re);
  }
  // The rules across fields the schema cannot say (the model validators in messages.py).
  const message = /** @type {Message} */ (raw);
  if (message.type === "exec" && message.window !== null && message.stream !== true) {
    const details = "window: 'window' is the credit of an output stream: it needs 'stream': true";
    throw invalid(side, `invalid 'exec' message: ${details}`, ErrorCode.BAD_MESSAGE, re);
  }
  if (message.type === "share_image" && (message.to ?? []).length === 0 && message.public !== true) {
    const details = "(message): a share names tenants in 'to', or 'public': true, or both";
    throw invalid(side, `invalid 'share_image' message: ${details}`, ErrorCode.BAD_MESSAGE, re);
  }
  if (message.type === "rent" && message.budget !== null && message.group === null) {
    const details = "(message): a budget is a group's: give the rent a group";
    throw invalid(side, `invalid 'rent' message: ${details}`, ErrorCode.BAD_MESSAGE, re);
  }
  return deepFreeze(raw);
}

/**
 * The error for an invalid message: this side's (never sent), or the peer's (with the
 * `re` its error reply names).
 * @param {"local" | "remote"} side
 * @param {string} message
 * @param {string} code
 * @param {number | null} [re]
 */
function invalid(side, message, code, re = null) {
  return side === "local" ? new LocalProtocolError(message, { code }) : new RemoteProtocolError(message, { code, re });
}

/**
 * The code and the description that ajv's `errors` on `message` amount to, judged as
 * pydantic judges.
 * @param {Record<string, unknown>} message
 * @param {ValidationProblem[]} errors
 */
function judge(message, errors) {
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
  return { code: badPath ? ErrorCode.BAD_PATH : ErrorCode.BAD_MESSAGE, details };
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
