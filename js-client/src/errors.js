/**
 * Every error kiln-client throws, under one root (mirrors `python/kiln/errors.py`).
 *
 *     KilnError                      .code: a stable error code shared with the protocol
 *      +-- UsageError                the caller's own mistake, found before anything is sent
 *      |    +-- InvalidPathError     a container path that is relative or holds '..'
 *      +-- ProtocolError             a peer broke protocol kiln.v1 (or we did, and it said so)
 *      |    +-- UnsupportedVersionError  the hub speaks another protocol or major version
 *      +-- ConnectionClosedError     the connection to the hub is gone
 *      +-- UnauthorizedError         the hub refused our token
 *      +-- NoMatchError              no provider meets the demand (the message names the constraint)
 *      +-- ImageNotFoundError        the provider does not hold the image
 *      +-- ActivityError             something went wrong inside a rented activity
 *      |    +-- ProviderLostError    the provider vanished; the activity is gone
 *      |    +-- CommandTimeoutError  a command ran past its timeout and was killed (.result)
 *      |    +-- FileNotFoundError    no such file or folder in the container
 *      |    +-- TransferFailedError  a file stream broke off
 *      |    +-- ContainerFailedError Docker refused an operation on the container
 *      +-- CancelledError            the request was cancelled (an AbortSignal fired)
 *      +-- TaskTimeoutError          a map task ran past taskTimeoutMs (it is retried)
 *      +-- TaskFailedError           a map task failed for good (.index, .attempts)
 *      +-- RetryTaskError            thrown by a map worker: run this task again elsewhere
 *      +-- RemoteError               any other error a peer reported (.code tells which)
 *
 * The names are Python's with JavaScript's `Error` suffix (Python's `CommandTimeout` is
 * `CommandTimeoutError` here); the codes are the same. {@link errorFromCode} turns an
 * `error` message from the wire into the right class.
 * @module
 */

import { ErrorCode, ERROR_CODES } from "./protocol/codes.js";

/** The root of every Kiln error. `code` is stable; branch on it or on the class. */
export class KilnError extends Error {
  /** @type {string} */
  static defaultCode = ErrorCode.INTERNAL;

  /**
   * @param {string} message
   * @param {{code?: string, cause?: unknown}} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    /** @type {string} */
    this.code = options.code ?? /** @type {typeof KilnError} */ (new.target).defaultCode;
  }
}

export class UsageError extends KilnError {
  static defaultCode = ErrorCode.BAD_MESSAGE;
}
export class InvalidPathError extends UsageError {
  static defaultCode = ErrorCode.BAD_PATH;
}
export class ProtocolError extends KilnError {
  static defaultCode = ErrorCode.BAD_MESSAGE;
}
export class UnsupportedVersionError extends ProtocolError {
  static defaultCode = ErrorCode.UNSUPPORTED_VERSION;
}
export class ConnectionClosedError extends KilnError {
  static defaultCode = ErrorCode.CONNECTION_CLOSED;
}
export class UnauthorizedError extends KilnError {
  static defaultCode = ErrorCode.UNAUTHORIZED;
}
export class NoMatchError extends KilnError {
  static defaultCode = ErrorCode.NO_MATCH;
}
export class ImageNotFoundError extends KilnError {
  static defaultCode = ErrorCode.IMAGE_NOT_FOUND;
}
export class ActivityError extends KilnError {
  static defaultCode = ErrorCode.CONTAINER_FAILED;
}
export class ProviderLostError extends ActivityError {
  static defaultCode = ErrorCode.PROVIDER_LOST;
}
export class CommandTimeoutError extends ActivityError {
  static defaultCode = ErrorCode.TIMEOUT;
  /**
   * @param {string} message
   * @param {import("./activity.js").Result} result what the command wrote before it was killed
   */
  constructor(message, result) {
    super(message);
    this.result = result;
  }
}
export class FileNotFoundError extends ActivityError {
  static defaultCode = ErrorCode.FILE_NOT_FOUND;
}
export class TransferFailedError extends ActivityError {
  static defaultCode = ErrorCode.TRANSFER_FAILED;
}
export class ContainerFailedError extends ActivityError {
  static defaultCode = ErrorCode.CONTAINER_FAILED;
}
export class CancelledError extends KilnError {
  static defaultCode = ErrorCode.CANCELLED;
}
/** A `map` task ran past its `taskTimeoutMs`; its worker's signal fired. */
export class TaskTimeoutError extends KilnError {
  static defaultCode = ErrorCode.TIMEOUT;
}
/**
 * A `map` task that failed for good: a worker error that is not retried, or a task out
 * of attempts. `index` and `item` name the task; `attempts` holds each attempt's error
 * (the last is also the `cause`). Code `internal`, as in Python.
 */
export class TaskFailedError extends KilnError {
  /**
   * @param {string} message
   * @param {{index: number, item: unknown, attempts: unknown[]}} task
   */
  constructor(message, task) {
    super(message, { cause: task.attempts.at(-1) });
    this.index = task.index;
    this.item = task.item;
    this.attempts = task.attempts;
  }
}
/** Thrown by a `map` worker to have its task tried again (on another provider if possible). */
export class RetryTaskError extends KilnError {}
export class RemoteError extends KilnError {}

/** @type {Record<string, typeof KilnError>} */
const BY_CODE = {
  [ErrorCode.BAD_JSON]: ProtocolError,
  [ErrorCode.BAD_MESSAGE]: ProtocolError,
  [ErrorCode.UNKNOWN_TYPE]: ProtocolError,
  [ErrorCode.MESSAGE_TOO_LARGE]: ProtocolError,
  [ErrorCode.BAD_FRAME]: ProtocolError,
  [ErrorCode.OUT_OF_ORDER]: ProtocolError,
  [ErrorCode.DUPLICATE_ID]: ProtocolError,
  [ErrorCode.FLOW_CONTROL]: ProtocolError,
  [ErrorCode.UNKNOWN_STREAM]: ProtocolError,
  [ErrorCode.UNSUPPORTED_VERSION]: UnsupportedVersionError,
  [ErrorCode.UNAUTHORIZED]: UnauthorizedError,
  [ErrorCode.BAD_PATH]: InvalidPathError,
  [ErrorCode.NO_MATCH]: NoMatchError,
  [ErrorCode.IMAGE_NOT_FOUND]: ImageNotFoundError,
  [ErrorCode.PROVIDER_LOST]: ProviderLostError,
  [ErrorCode.UNKNOWN_ACTIVITY]: ActivityError,
  [ErrorCode.FILE_NOT_FOUND]: FileNotFoundError,
  [ErrorCode.NOT_A_FILE]: FileNotFoundError,
  [ErrorCode.TRANSFER_FAILED]: TransferFailedError,
  [ErrorCode.CONTAINER_FAILED]: ContainerFailedError,
  [ErrorCode.CANCELLED]: CancelledError,
};

/**
 * The error for an `error` message received with `code` (an unknown code: RemoteError
 * with code `internal`, the message naming the code).
 * @param {string} code
 * @param {string} message
 * @returns {KilnError}
 */
export function errorFromCode(code, message) {
  if (!ERROR_CODES.has(code)) return new RemoteError(`${message} [${code}]`, { code: ErrorCode.INTERNAL });
  const Class = BY_CODE[code] ?? RemoteError;
  return new Class(message, { code });
}
