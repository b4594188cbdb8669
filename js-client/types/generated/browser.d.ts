/**
 * kiln-client for browsers (and any runtime with a global WebSocket): the native
 * WebSocket, Blobs for `sendFile` and `pushImage`, WritableStreams for `downloadFile`.
 * Imports nothing from Node.
 *
 *     import { connect } from "kiln-client";
 *     const requestor = await connect("ws://127.0.0.1:7465");
 * @module
 */
export * from "./common.js";
/**
 * Connect to the hub at `url` as a requestor: one hub's URL, or those of several hubs of one
 * market (an array, or one string with commas), of which it joins the first that answers and,
 * when that one dies, dials the next. The browser verifies a wss:// hub against its own trust
 * store: `ca` (Node only) is refused with a UsageError.
 *
 * Rejects with ConnectionLostError when the hub cannot be reached or does not answer,
 * UnsupportedVersionError when it speaks another protocol or major version, and
 * UnauthorizedError when it refuses the token.
 * @param {string | string[]} url e.g. "ws://127.0.0.1:7465", or ["ws://a:7465", "ws://b:7465"]
 * `releaseOnSignal` (Node's) is ignored: a page has no signals.
 * @param {import("./requestor.js").ConnectOptions} [options]
 * @returns {Promise<import("./requestor.js").Requestor>}
 */
export declare function connect(url: string | string[], options?: import("./requestor.js").ConnectOptions): Promise<import("./requestor.js").Requestor>;
