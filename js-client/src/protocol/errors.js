/**
 * Every error of protocol kiln.v1, under one root, each with the stable code the protocol
 * carries (mirrors `python/kiln/protocol/errors.py`).
 *
 * The tree, with the SDK's own errors, is drawn in `src/errors.js`. The names are
 * Python's with JavaScript's `Error` suffix (Python's `NoMatch` is `NoMatchError` here);
 * the codes are the same. {@link errorFromCode} turns an `error` message from the wire
 * into the right class.
 * @module
 */

import { ERROR_CODES, ErrorCode } from "./generated/constants.js";

/**
 * @typedef {object} KilnErrorOptions
 * @property {string} [code] the stable code; the class's `defaultCode` when left out
 * @property {unknown} [cause] the error this one comes from
 * @property {string | null} [provider] the provider involved, when the hub said which
 */

/**
 * The root of every Kiln error. `code` is stable; branch on it or on the class.
 * `provider` names the provider involved, when the hub said which (a failed rent).
 */
export class KilnError extends Error {
  /** @type {string} */
  static defaultCode = ErrorCode.INTERNAL;

  /**
   * @param {string} message
   * @param {KilnErrorOptions} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    /** @type {string} */
    this.code = options.code ?? /** @type {typeof KilnError} */ (new.target).defaultCode;
    /** @type {string | null} */
    this.provider = options.provider ?? null;
  }
}

/** The caller's own mistake, found before anything is sent. */
export class UsageError extends KilnError {
  static defaultCode = ErrorCode.BAD_MESSAGE;
}
/** A container path that is relative, not normalized, or holds `..`. */
export class InvalidPathError extends UsageError {
  static defaultCode = ErrorCode.BAD_PATH;
}
/** Protocol kiln.v1 was broken (see the two subclasses for by whom). */
export class ProtocolError extends KilnError {
  static defaultCode = ErrorCode.BAD_MESSAGE;
}
/**
 * This side broke the protocol: a message it was about to send is invalid (and was
 * never sent), or the peer refused one of ours as invalid.
 */
export class LocalProtocolError extends ProtocolError {}
/** The peer broke the protocol. `re` is the id of the request its bad message carried, if readable. */
export class RemoteProtocolError extends ProtocolError {
  /**
   * @param {string} message
   * @param {KilnErrorOptions & {re?: number | null}} [options]
   */
  constructor(message, options = {}) {
    super(message, options);
    /** @type {number | null} */
    this.re = options.re ?? null;
  }
}
/** The two sides speak different major versions (or protocols). */
export class UnsupportedVersionError extends ProtocolError {
  static defaultCode = ErrorCode.UNSUPPORTED_VERSION;
}
/** The connection to the hub is over: this side closed it. */
export class ConnectionClosedError extends KilnError {
  static defaultCode = ErrorCode.CONNECTION_CLOSED;
}
/** The connection to the hub broke: the hub closed it or vanished, or the network failed. */
export class ConnectionLostError extends ConnectionClosedError {}
/** The hub refused our token. */
export class UnauthorizedError extends KilnError {
  static defaultCode = ErrorCode.UNAUTHORIZED;
}
/** No provider meets the demand (the message names the constraint). */
export class NoMatchError extends KilnError {
  static defaultCode = ErrorCode.NO_MATCH;
}
/** The provider does not hold the image (`provider` names it). */
export class ImageNotFoundError extends KilnError {
  static defaultCode = ErrorCode.IMAGE_NOT_FOUND;
}
/** An image cannot be stored or loaded: not a `docker save` archive, or one whose parts disagree. */
export class ImageError extends KilnError {
  static defaultCode = ErrorCode.BAD_IMAGE;
}
/** A blob's bytes do not match its digest or declared size. */
export class ImageCorruptError extends ImageError {
  static defaultCode = ErrorCode.IMAGE_CORRUPT;
}
/** The hub's image store cannot make room for the image within its limit. */
export class StoreFullError extends ImageError {
  static defaultCode = ErrorCode.STORE_FULL;
}
/** (1.4) The image's layers would take more than a limit once extracted, or expand absurdly. */
export class ImageTooLargeError extends ImageError {
  static defaultCode = ErrorCode.IMAGE_TOO_LARGE;
}
/** Something went wrong inside a rented activity. */
export class ActivityError extends KilnError {
  static defaultCode = ErrorCode.CONTAINER_FAILED;
}
/** The provider vanished; the activity is gone. */
export class ProviderLostError extends ActivityError {
  static defaultCode = ErrorCode.PROVIDER_LOST;
}
/** No such file or folder in the container (or a folder where a file is needed). */
export class FileNotFoundError extends ActivityError {
  static defaultCode = ErrorCode.FILE_NOT_FOUND;
}
/** A file stream broke off, or its size was wrong. */
export class TransferFailedError extends ActivityError {
  static defaultCode = ErrorCode.TRANSFER_FAILED;
}
/** Docker refused an operation on the container. */
export class ContainerFailedError extends ActivityError {
  static defaultCode = ErrorCode.CONTAINER_FAILED;
}
/** (1.7) Nothing listens on the container's port that a connect named. */
export class ConnectionRefusedError extends ActivityError {
  static defaultCode = ErrorCode.CONNECTION_REFUSED;
}
/** The request was cancelled. */
export class CancelledError extends KilnError {
  static defaultCode = ErrorCode.CANCELLED;
}
/** Any other error a peer reported (`code` tells which). */
/** (1.5) A rent of a priced provider whose worst case the requestor's available credits cannot hold (or a requestor with no account); an activity whose hold ran out. */
export class InsufficientFundsError extends KilnError {
  static defaultCode = ErrorCode.INSUFFICIENT_FUNDS;
}
/** (1.5) What is left of a group's (a job's) budget cannot cover a rent's hold; an activity ended when that budget ran out; a job's tasks left when it did. */
export class BudgetExceededError extends KilnError {
  static defaultCode = ErrorCode.BUDGET_EXCEEDED;
}
export class RemoteError extends KilnError {}

/** @type {Readonly<Record<string, typeof KilnError>>} */
const BY_CODE = Object.freeze({
  // The peer says a message of ours broke the protocol.
  [ErrorCode.BAD_JSON]: LocalProtocolError,
  [ErrorCode.BAD_MESSAGE]: LocalProtocolError,
  [ErrorCode.UNKNOWN_TYPE]: LocalProtocolError,
  [ErrorCode.MESSAGE_TOO_LARGE]: LocalProtocolError,
  [ErrorCode.BAD_FRAME]: LocalProtocolError,
  [ErrorCode.OUT_OF_ORDER]: LocalProtocolError,
  [ErrorCode.DUPLICATE_ID]: LocalProtocolError,
  [ErrorCode.FLOW_CONTROL]: LocalProtocolError,
  [ErrorCode.UNKNOWN_STREAM]: LocalProtocolError,
  [ErrorCode.UNSUPPORTED_VERSION]: UnsupportedVersionError,
  [ErrorCode.UNAUTHORIZED]: UnauthorizedError,
  [ErrorCode.BAD_PATH]: InvalidPathError,
  [ErrorCode.NO_MATCH]: NoMatchError,
  [ErrorCode.IMAGE_NOT_FOUND]: ImageNotFoundError,
  [ErrorCode.BAD_IMAGE]: ImageError,
  [ErrorCode.IMAGE_CORRUPT]: ImageCorruptError,
  [ErrorCode.STORE_FULL]: StoreFullError,
  [ErrorCode.IMAGE_TOO_LARGE]: ImageTooLargeError,
  [ErrorCode.PROVIDER_LOST]: ProviderLostError,
  [ErrorCode.UNKNOWN_ACTIVITY]: ActivityError,
  [ErrorCode.FILE_NOT_FOUND]: FileNotFoundError,
  [ErrorCode.NOT_A_FILE]: FileNotFoundError,
  [ErrorCode.TRANSFER_FAILED]: TransferFailedError,
  [ErrorCode.CONTAINER_FAILED]: ContainerFailedError,
  [ErrorCode.CANCELLED]: CancelledError,
  [ErrorCode.CONNECTION_REFUSED]: ConnectionRefusedError,
  [ErrorCode.NOT_PUBLISHED]: ActivityError,
  [ErrorCode.INSUFFICIENT_FUNDS]: InsufficientFundsError,
  [ErrorCode.BUDGET_EXCEEDED]: BudgetExceededError,
});

/**
 * The error for an `error` message received with `code`: a code this version does not
 * know is a RemoteError with code `internal`, its message naming the code.
 * @param {string} code
 * @param {string} message
 * @param {string | null} [provider] the provider the hub named, if any
 * @returns {KilnError}
 */
export function errorFromCode(code, message, provider = null) {
  if (!ERROR_CODES.has(code)) return new RemoteError(`${message} [${code}]`, { code: ErrorCode.INTERNAL, provider });
  const Class = BY_CODE[code] ?? RemoteError;
  return new Class(message, { code, provider });
}
