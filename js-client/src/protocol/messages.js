/**
 * Every JSON message of protocol kiln.v1, checked the way the pydantic models in
 * `python/kiln/protocol/messages.py` check them: strict types (no string-to-number
 * coercion, a bool is not a number), no extra fields, the same ranges and patterns.
 *
 * Call {@link parse} on the text of a WebSocket text frame to get a message (a plain
 * frozen object, defaults filled in) or a {@link ProtocolViolation}; call
 * {@link serialize} to get the text to send. Nothing in this module does I/O.
 *
 * Known differences from Python, both from `JSON.parse`: a number written `1.0` or
 * `1e2` is an integer here (Python's strict int refuses it), and integers beyond
 * 2^53 lose precision.
 * @module
 */

import { ErrorCode } from "./codes.js";
import { MAX_PATH_LENGTH, pathProblem } from "./paths.js";
import { ProtocolViolation } from "./violation.js";

export { MAX_PATH_LENGTH, pathProblem as containerPathProblem } from "./paths.js";

export const PROTOCOL_NAME = "kiln.v1";
export const PROTOCOL_VERSION = "1.0";
export const MAJOR_VERSION = 1;
export const MINOR_VERSION = 0;

export const MAX_ID = 2 ** 31 - 1;
/** The least memory a demand may ask for (Docker's own floor); 0 would mean no limit at all. */
export const MIN_MEMORY = 6 * 2 ** 20;

// --- field checks -------------------------------------------------------------------
// A check takes (value, loc, problems) and pushes a problem for each thing wrong.

/** @typedef {{loc: string, msg: string, kind: "bad_path" | "invalid"}} Problem */
/** @typedef {(value: unknown, loc: string, problems: Problem[]) => void} Check */
/** @typedef {{check: Check, required: boolean, fallback?: unknown}} Field */

const isObject = (/** @type {unknown} */ v) => typeof v === "object" && v !== null && !Array.isArray(v);
const codePoints = (/** @type {string} */ s) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/**
 * @param {{min?: number, max?: number, pattern?: RegExp}} [rules]
 * @returns {Check}
 */
function str(rules = {}) {
  return (value, loc, problems) => {
    if (typeof value !== "string") {
      problems.push({ loc, msg: "Input should be a valid string", kind: "invalid" });
      return;
    }
    const length = codePoints(value);
    if (rules.min !== undefined && length < rules.min) {
      problems.push({ loc, msg: `String should have at least ${rules.min} characters`, kind: "invalid" });
    } else if (rules.max !== undefined && length > rules.max) {
      problems.push({ loc, msg: `String should have at most ${rules.max} characters`, kind: "invalid" });
    } else if (rules.pattern !== undefined && !rules.pattern.test(value)) {
      problems.push({ loc, msg: `String should match pattern '${rules.pattern.source}'`, kind: "invalid" });
    }
  };
}

/**
 * @param {{integer?: boolean, gt?: number, ge?: number, le?: number}} rules
 * @returns {Check}
 */
function num(rules) {
  return (value, loc, problems) => {
    const ok = typeof value === "number" && Number.isFinite(value) && (!rules.integer || Number.isInteger(value));
    if (!ok) {
      problems.push({ loc, msg: `Input should be a valid ${rules.integer ? "integer" : "number"}`, kind: "invalid" });
      return;
    }
    const n = /** @type {number} */ (value);
    if (rules.gt !== undefined && !(n > rules.gt)) {
      problems.push({ loc, msg: `Input should be greater than ${rules.gt}`, kind: "invalid" });
    } else if (rules.ge !== undefined && !(n >= rules.ge)) {
      problems.push({ loc, msg: `Input should be greater than or equal to ${rules.ge}`, kind: "invalid" });
    } else if (rules.le !== undefined && !(n <= rules.le)) {
      problems.push({ loc, msg: `Input should be less than or equal to ${rules.le}`, kind: "invalid" });
    }
  };
}

const int = (/** @type {{ge?: number, le?: number}} */ rules = {}) => num({ ...rules, integer: true });
const float = (/** @type {{gt?: number, ge?: number, le?: number}} */ rules = {}) => num(rules);

/** @type {Check} */
const bool = (value, loc, problems) => {
  if (typeof value !== "boolean") problems.push({ loc, msg: "Input should be a valid boolean", kind: "invalid" });
};

/** @param {...string} options @returns {Check} */
function literal(...options) {
  return (value, loc, problems) => {
    if (typeof value !== "string" || !options.includes(value)) {
      problems.push({ loc, msg: `Input should be ${options.map((o) => `'${o}'`).join(" or ")}`, kind: "invalid" });
    }
  };
}

/** @param {Check} item @param {{min?: number, max?: number}} [rules] @returns {Check} */
function list(item, rules = {}) {
  return (value, loc, problems) => {
    if (!Array.isArray(value)) {
      problems.push({ loc, msg: "Input should be a valid list", kind: "invalid" });
      return;
    }
    if (rules.min !== undefined && value.length < rules.min) {
      problems.push({ loc, msg: `List should have at least ${rules.min} item`, kind: "invalid" });
    } else if (rules.max !== undefined && value.length > rules.max) {
      problems.push({ loc, msg: `List should have at most ${rules.max} items`, kind: "invalid" });
    }
    value.forEach((v, i) => item(v, `${loc}.${i}`, problems));
  };
}

/** @param {Check} key @param {Check} item @param {{max?: number}} [rules] @returns {Check} */
function dict(key, item, rules = {}) {
  return (value, loc, problems) => {
    if (!isObject(value)) {
      problems.push({ loc, msg: "Input should be a valid dictionary", kind: "invalid" });
      return;
    }
    const entries = Object.entries(/** @type {object} */ (value));
    if (rules.max !== undefined && entries.length > rules.max) {
      problems.push({ loc, msg: `Dictionary should have at most ${rules.max} items`, kind: "invalid" });
    }
    for (const [k, v] of entries) {
      key(k, `${loc}.${k}.[key]`, problems);
      item(v, `${loc}.${k}`, problems);
    }
  };
}

/** @param {Check} inner @returns {Check} */
function orNull(inner) {
  return (value, loc, problems) => {
    if (value !== null) inner(value, loc, problems);
  };
}

/** @type {Check} */
const containerPath = (value, loc, problems) => {
  const before = problems.length;
  str({ min: 1, max: MAX_PATH_LENGTH })(value, loc, problems);
  if (problems.length !== before) return;
  const why = pathProblem(/** @type {string} */ (value));
  if (why !== null) problems.push({ loc, msg: why, kind: "bad_path" });
};

const requestId = int({ ge: 1, le: MAX_ID });
const activityId = str({ pattern: /^[A-Za-z0-9_.-]{1,64}$/ });
const name = str({ min: 1, max: 64, pattern: /^[^\x00-\x1f]+$/u });
const imageRef = str({ min: 1, max: 255, pattern: /^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/ });
const labels = dict(str({ min: 1, max: 128 }), str({ max: 256 }), { max: 64 });
const bytes = int({ ge: 0, le: 2 ** 62 });
const code = str({ pattern: /^[a-z][a-z0-9_]{0,63}$/ });
const cpus = float({ ge: 0, le: 4096 });
const fileMode = int({ ge: 0, le: 0o7777 });

/** A required field. @param {Check} check @returns {Field} */
const req = (check) => ({ check, required: true });
/** A field with a default. @param {Check} check @param {unknown} fallback @returns {Field} */
const opt = (check, fallback) => ({ check, required: false, fallback });

/**
 * A model: an object with exactly these fields (extra ones refused).
 * @param {Record<string, Field>} fields
 */
function model(fields) {
  /** @type {Check & {fields: Record<string, Field>}} */
  const check = (value, loc, problems) => {
    if (!isObject(value)) {
      problems.push({ loc, msg: "Input should be an object", kind: "invalid" });
      return;
    }
    const obj = /** @type {Record<string, unknown>} */ (value);
    const prefix = loc === "" ? "" : `${loc}.`;
    for (const [key, field] of Object.entries(fields)) {
      if (Object.hasOwn(obj, key)) field.check(obj[key], prefix + key, problems);
      else if (field.required) problems.push({ loc: prefix + key, msg: "Field required", kind: "invalid" });
    }
    for (const key of Object.keys(obj)) {
      if (!Object.hasOwn(fields, key)) {
        problems.push({ loc: prefix + key, msg: "Extra inputs are not permitted", kind: "invalid" });
      }
    }
  };
  check.fields = fields;
  return check;
}

// --- values carried inside messages --------------------------------------------------

const Resources = model({ cpus: req(cpus), memory: req(bytes), storage: opt(bytes, 0) });
const Demand = model({
  cpus: opt(float({ ge: 0.01, le: 4096 }), 1.0),
  memory: opt(int({ ge: MIN_MEMORY, le: 2 ** 62 }), 256 * 2 ** 20),
  storage: opt(bytes, 0),
  labels: opt(labels, {}),
});
const anyInt = int();
const Limits = model({
  max_message_bytes: req(anyInt),
  max_frame_bytes: req(anyInt),
  chunk_bytes: req(anyInt),
  max_window: req(anyInt),
  max_pending: req(anyInt),
  max_streams: req(anyInt),
  max_output_bytes: req(anyInt),
});
const ProviderInfo = model({
  name: req(name),
  arch: req(str()),
  labels: req(labels),
  images: req(list(str())),
  offered: req(Resources),
  free: req(Resources),
  activities: req(anyInt),
});

// --- the messages, keyed by their `type` ---------------------------------------------

/** @param {string} type @param {Record<string, Field>} fields */
const message = (type, fields) => model({ type: req(literal(type)), ...fields });

/** The model of every message type. */
export const MODELS = Object.freeze({
  hello: message("hello", {
    version: req(str({ pattern: /^[0-9]{1,4}\.[0-9]{1,4}$/ })),
    role: req(literal("requestor", "provider")),
    name: req(name),
    token: opt(orNull(str({ max: 1024 })), null),
    software: opt(str({ max: 128 }), ""),
  }),
  welcome: message("welcome", {
    version: req(str()),
    session: req(str()),
    software: req(str()),
    limits: req(Limits),
  }),
  error: message("error", {
    re: opt(orNull(requestId), null),
    code: req(code),
    message: req(str({ max: 4096 })),
  }),
  done: message("done", {
    re: req(requestId),
    bytes: opt(orNull(bytes), null),
    cpu_seconds: opt(orNull(float({ ge: 0 })), null),
  }),
  offer: message("offer", {
    id: req(requestId),
    resources: req(Resources),
    arch: req(str({ min: 1, max: 32 })),
    labels: opt(labels, {}),
    images: opt(list(imageRef, { max: 4096 }), []),
  }),
  rent: message("rent", {
    id: req(requestId),
    image: req(imageRef),
    demand: req(Demand),
    exclude: opt(list(name, { max: 1024 }), []),
  }),
  rented: message("rented", {
    re: req(requestId),
    activity: req(activityId),
    provider: req(name),
    cached: req(bool),
    resources: req(Resources),
  }),
  release: message("release", { id: req(requestId), activity: req(activityId) }),
  market: message("market", { id: req(requestId) }),
  market_info: message("market_info", {
    re: req(requestId),
    providers: req(list(ProviderInfo)),
    activities: req(anyInt),
  }),
  create: message("create", {
    id: req(requestId),
    activity: req(activityId),
    image: req(imageRef),
    resources: req(Resources),
  }),
  destroy: message("destroy", { id: req(requestId), activity: req(activityId) }),
  activity_lost: message("activity_lost", {
    activity: req(activityId),
    code: req(code),
    reason: req(str({ max: 4096 })),
  }),
  exec: message("exec", {
    id: req(requestId),
    activity: req(activityId),
    argv: req(list(str({ max: 65536 }), { min: 1, max: 4096 })),
    env: opt(dict(str({ min: 1, max: 256 }), str(), { max: 1024 }), {}),
    workdir: opt(orNull(containerPath), null),
    timeout: opt(orNull(float({ gt: 0, le: 7 * 86400 })), null),
  }),
  exec_result: message("exec_result", {
    re: req(requestId),
    exit_code: req(anyInt),
    timed_out: req(bool),
    stdout: req(str()),
    stderr: req(str()),
    stdout_truncated: opt(bool, false),
    stderr_truncated: opt(bool, false),
    duration: req(float({ ge: 0 })),
  }),
  upload: message("upload", {
    id: req(requestId),
    activity: req(activityId),
    path: req(containerPath),
    size: req(bytes),
    mode: opt(int({ ge: 0, le: 0o777 }), 0o644), // permission bits only: no setuid, setgid, sticky
  }),
  download: message("download", {
    id: req(requestId),
    activity: req(activityId),
    path: req(containerPath),
    window: req(int({ ge: 1, le: 1024 })),
  }),
  download_info: message("download_info", {
    re: req(requestId),
    kind: req(literal("file", "dir")),
    size: opt(orNull(bytes), null),
    mode: opt(fileMode, 0o644),
  }),
  credit: message("credit", { stream: req(requestId), chunks: req(int({ ge: 1, le: 1024 })) }),
  cancel: message("cancel", { target: req(requestId) }),
});

/** Every message `type`. */
export const MESSAGE_TYPES = Object.freeze(new Set(Object.keys(MODELS)));

/** The types that end a request (its final reply, matched by `re`). */
export const FINAL_REPLIES = Object.freeze(new Set(["done", "error", "exec_result", "rented", "market_info"]));

/** @param {unknown} raw */
function requestIdOf(raw) {
  const id = /** @type {Record<string, unknown>} */ (raw).id;
  return typeof id === "number" && Number.isInteger(id) && id >= 1 && id <= MAX_ID ? id : null;
}

/**
 * Check a decoded JSON value as a message; return it frozen with defaults filled in.
 * @param {unknown} raw
 * @returns {import("../../types/protocol.js").Message}
 */
export function validate(raw) {
  if (!isObject(raw)) throw new ProtocolViolation(ErrorCode.BAD_MESSAGE, "a message must be a JSON object");
  const obj = /** @type {Record<string, unknown>} */ (raw);
  const re = requestIdOf(obj);
  const kind = obj.type;
  if (typeof kind !== "string") {
    throw new ProtocolViolation(ErrorCode.BAD_MESSAGE, "a message needs a string field 'type'", re);
  }
  if (!Object.hasOwn(MODELS, kind)) {
    throw new ProtocolViolation(ErrorCode.UNKNOWN_TYPE, `unknown message type '${kind.slice(0, 64)}'`, re);
  }
  const check = MODELS[/** @type {keyof typeof MODELS} */ (kind)];
  /** @type {Problem[]} */
  const problems = [];
  check(obj, "", problems);
  if (problems.length > 0) {
    const code = problems.some((p) => p.kind === "bad_path") ? ErrorCode.BAD_PATH : ErrorCode.BAD_MESSAGE;
    const details = problems
      .slice(0, 5)
      .map((p) => `${p.loc || "(message)"}: ${p.msg}`)
      .join("; ");
    throw new ProtocolViolation(code, `invalid '${kind}' message: ${details}`, re);
  }
  return /** @type {any} */ (withDefaults(check, obj));
}

/**
 * A deep-frozen copy of `obj` with the model's defaults filled in.
 * @param {{fields: Record<string, Field>}} check
 * @param {Record<string, unknown>} obj
 */
function withDefaults(check, obj) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [key, field] of Object.entries(check.fields)) {
    const value = Object.hasOwn(obj, key) ? obj[key] : structuredClone(field.fallback);
    const nested = /** @type {any} */ (field.check).fields;
    out[key] = nested !== undefined && isObject(value) ? withDefaults(/** @type {any} */ (field.check), /** @type {any} */ (value)) : deepFreeze(value);
  }
  return Object.freeze(out);
}

/** @template T @param {T} value @returns {T} */
function deepFreeze(value) {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * Parse and validate one text frame.
 *
 * Throws {@link ProtocolViolation} with code `bad_json`, `unknown_type`, `bad_path` or
 * `bad_message`; its `re` is the message's `id` when one could be read.
 * @param {string} text
 * @returns {import("../../types/protocol.js").Message}
 */
export function parse(text) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ProtocolViolation(ErrorCode.BAD_JSON, `not valid JSON: ${/** @type {Error} */ (e).message}`);
  }
  return validate(raw);
}

/**
 * The JSON text of `message`, fields left at `null` or `undefined` omitted.
 * The message is validated first, so a bad one is never sent (a {@link ProtocolViolation}).
 * @param {import("../../types/protocol.js").Message | Record<string, unknown>} message
 * @returns {string}
 */
export function serialize(message) {
  const text = JSON.stringify(message, (_key, value) => (value === null ? undefined : value));
  return JSON.stringify(validate(JSON.parse(text)), (_key, value) => (value === null ? undefined : value));
}
