/**
 * Every error kiln-client throws, under one root (mirrors `python/kiln/protocol/errors.py`
 * and the requestor's own errors in `python/kiln/requestor/`).
 *
 *     KilnError                          .code: a stable error code shared with the protocol
 *      +-- UsageError                    the caller's own mistake, found before anything is sent
 *      |    +-- InvalidPathError         a container path that is relative or holds '..'
 *      |    +-- DownloadTooLargeError    a download would pass its maxBytes (by default the storage rented)
 *      +-- ProtocolError                 protocol kiln.v1 was broken
 *      |    +-- LocalProtocolError       ... by this side: a message it was about to send (never
 *      |    |                            sent), or one the hub refused as invalid
 *      |    +-- RemoteProtocolError      ... by the hub: a frame or message it sent is invalid (.re)
 *      |    +-- UnsupportedVersionError  the hub speaks another protocol or major version
 *      +-- ConnectionClosedError         the connection to the hub is over: this side closed it
 *      |    +-- ConnectionLostError      ... it broke: the hub closed it or vanished, or the network failed
 *      +-- UnauthorizedError             the hub refused our token
 *      +-- NoMatchError                  no provider meets the demand (the message names the constraint)
 *      +-- ImageNotFoundError            the provider does not hold the image (.provider)
 *      +-- ImageError                    not an image (a bad `docker save` archive, config and layers disagree)
 *      |    +-- ImageCorruptError        a blob's bytes do not match its digest or size
 *      |    +-- StoreFullError           the hub's image store has no room for the image
 *      |    +-- ImageTooLargeError       its layers would expand past a limit (1.4)
 *      +-- ActivityError                 something went wrong inside a rented activity
 *      |    +-- ProviderLostError        the provider vanished; the activity is gone
 *      |    +-- CommandTimeoutError      a command ran past its timeout and was killed (.result)
 *      |    +-- CommandFailedError       a command run with `check` exited with a code other than 0 (.result)
 *      |    +-- FileNotFoundError        no such file or folder in the container
 *      |    +-- TransferFailedError      a file stream broke off
 *      |    +-- ContainerFailedError     Docker refused an operation on the container
 *      |    +-- ConnectionRefusedError   (1.7) nothing listens on the container's port a connect named
 *      +-- CancelledError                the request was cancelled (an AbortSignal fired)
 *      +-- InsufficientFundsError        (1.5) the requestor's credits cannot hold a rent's worst case
 *      +-- BudgetExceededError           (1.5) a job's budget cannot cover another rent: its tasks left fail so
 *      +-- TaskTimeoutError              a job's task ran past taskTimeoutMs (it is retried)
 *      +-- TaskFailedError               a job's task failed for good (.index, .item, .attempts, .cause)
 *      +-- DisputedError                 a verified task's results disagreed past settling: its TaskFailedError's cause
 *      +-- RetryTaskError                thrown by a job's worker: run this task again elsewhere
 *      +-- RemoteError                   any other error a peer reported (.code tells which)
 *
 * Every error has `provider`: the provider involved, when the hub named it (a failed rent).
 * The protocol's errors live in the protocol core (`src/protocol/errors.js`) and are
 * re-exported here; this module adds the requestor's own (CommandTimeoutError,
 * CommandFailedError, DownloadTooLargeError and the job's three). The names are Python's with JavaScript's `Error` suffix; the codes are
 * the same.
 * @module
 */

import { ErrorCode } from "./protocol/generated/constants.js";
import { ActivityError, KilnError, UsageError } from "./protocol/errors.js";

// Every error of the protocol core, with the requestor's own below.
export * from "./protocol/errors.js";

/** A command ran past its timeout and was killed; `result` holds what it wrote until then. */
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

/**
 * A download would take more than its `maxBytes` (code `download_too_large`): by default what
 * the activity could have written, the storage it rented. Nothing of it is kept; pass a larger
 * `maxBytes` to take it.
 */
export class DownloadTooLargeError extends UsageError {
  static defaultCode = ErrorCode.DOWNLOAD_TOO_LARGE;
}

/**
 * A command run with `check: true` exited with a code other than 0; `result` holds its
 * exit code and output (code `command_failed`).
 */
export class CommandFailedError extends ActivityError {
  static defaultCode = ErrorCode.COMMAND_FAILED;
  /**
   * @param {string} message
   * @param {import("./activity.js").Result} result what the command did
   */
  constructor(message, result) {
    super(message);
    this.result = result;
  }
}

/** An attempt of a job's task ran past `taskTimeoutMs`; its worker's signal fired, and the task is tried again. */
export class TaskTimeoutError extends KilnError {
  static defaultCode = ErrorCode.TIMEOUT;
}

/**
 * A job's task that failed for good: a worker error that is not retried, a task out of
 * attempts, or one no provider is left to run. `index` and `item` name the task;
 * `attempts` holds each attempt's error; `cause` is the error that ended it (the worker's
 * own error, whose name and message this one's message includes). Code `task_failed`, as
 * in Python.
 */
export class TaskFailedError extends KilnError {
  static defaultCode = ErrorCode.TASK_FAILED;
  /**
   * @param {string} message
   * @param {{index: number, item: unknown, attempts: unknown[], cause?: unknown}} task
   */
  constructor(message, task) {
    super(message, { cause: task.cause ?? task.attempts.at(-1) });
    this.index = task.index;
    this.item = task.item;
    this.attempts = task.attempts;
  }
}

/** A verified task's results disagreed, and no more runs could settle it: its TaskFailedError's cause (code `task_failed`). */
export class DisputedError extends KilnError {
  static defaultCode = ErrorCode.TASK_FAILED;
}

/** Thrown by a job's worker to have its task tried again (on another provider if possible). */
export class RetryTaskError extends KilnError {}
