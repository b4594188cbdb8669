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
export type KilnErrorOptions = {
    /**
     * the stable code; the class's `defaultCode` when left out
     */
    code?: string;
    /**
     * the error this one comes from
     */
    cause?: unknown;
    /**
     * the provider involved, when the hub said which
     */
    provider?: string | null;
};
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
export declare class KilnError extends Error {
    /** @type {string} */
    code: string;
    /** @type {string | null} */
    provider: string | null;
    /** @type {string} */
    static defaultCode: string;
    /**
     * @param {string} message
     * @param {KilnErrorOptions} [options]
     */
    constructor(message: string, options?: KilnErrorOptions);
}
/** The caller's own mistake, found before anything is sent. */
export declare class UsageError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** A container path that is relative, not normalized, or holds `..`. */
export declare class InvalidPathError extends UsageError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** Protocol kiln.v1 was broken (see the two subclasses for by whom). */
export declare class ProtocolError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/**
 * This side broke the protocol: a message it was about to send is invalid (and was
 * never sent), or the peer refused one of ours as invalid.
 */
export declare class LocalProtocolError extends ProtocolError {
}
/** The peer broke the protocol. `re` is the id of the request its bad message carried, if readable. */
export declare class RemoteProtocolError extends ProtocolError {
    /** @type {number | null} */
    re: number | null;
    /**
     * @param {string} message
     * @param {KilnErrorOptions & {re?: number | null}} [options]
     */
    constructor(message: string, options?: KilnErrorOptions & {
        re?: number | null;
    });
}
/** The two sides speak different major versions (or protocols). */
export declare class UnsupportedVersionError extends ProtocolError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** The connection to the hub is over: this side closed it. */
export declare class ConnectionClosedError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** The connection to the hub broke: the hub closed it or vanished, or the network failed. */
export declare class ConnectionLostError extends ConnectionClosedError {
}
/** The hub refused our token. */
export declare class UnauthorizedError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** No provider meets the demand (the message names the constraint). */
export declare class NoMatchError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** The provider does not hold the image (`provider` names it). */
export declare class ImageNotFoundError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** An image cannot be stored or loaded: not a `docker save` archive, or one whose parts disagree. */
export declare class ImageError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** A blob's bytes do not match its digest or declared size. */
export declare class ImageCorruptError extends ImageError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** The hub's image store cannot make room for the image within its limit. */
export declare class StoreFullError extends ImageError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** (1.4) The image's layers would take more than a limit once extracted, or expand absurdly. */
export declare class ImageTooLargeError extends ImageError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** Something went wrong inside a rented activity. */
export declare class ActivityError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** The provider vanished; the activity is gone. */
export declare class ProviderLostError extends ActivityError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** No such file or folder in the container (or a folder where a file is needed). */
export declare class FileNotFoundError extends ActivityError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** A file stream broke off, or its size was wrong. */
export declare class TransferFailedError extends ActivityError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** Docker refused an operation on the container. */
export declare class ContainerFailedError extends ActivityError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** (1.7) Nothing listens on the container's port that a connect named. */
export declare class ConnectionRefusedError extends ActivityError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** The request was cancelled. */
export declare class CancelledError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** Any other error a peer reported (`code` tells which). */
/** (1.5) A rent of a priced provider whose worst case the requestor's available credits cannot hold (or a requestor with no account); an activity whose hold ran out. */
export declare class InsufficientFundsError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
/** (1.5) What is left of a group's (a job's) budget cannot cover a rent's hold; an activity ended when that budget ran out; a job's tasks left when it did. */
export declare class BudgetExceededError extends KilnError {
    static defaultCode: import("./generated/constants.js").KnownErrorCode;
}
export declare class RemoteError extends KilnError {
}
/**
 * The error for an `error` message received with `code`: a code this version does not
 * know is a RemoteError with code `internal`, its message naming the code.
 * @param {string} code
 * @param {string} message
 * @param {string | null} [provider] the provider the hub named, if any
 * @returns {KilnError}
 */
export declare function errorFromCode(code: string, message: string, provider?: string | null): KilnError;
