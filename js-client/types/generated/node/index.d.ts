/**
 * kiln-client for Node.js: the `ws` package (or, for ws://, the runtime's global WebSocket
 * when it has one), and local files streamed from and to disk.
 *
 *     import { connect } from "kiln-client";
 *     const requestor = await connect("ws://127.0.0.1:7465");
 *     const overTls = await connect("wss://hub.example:7465", { ca: "ca.pem" });   // the CA's PEM file
 *     const either = await connect(["ws://hub-a:7465", "ws://hub-b:7465"]);       // two hubs of one market
 * @module
 */
export * from "../common.js";
/**
 * Connect to the hub at `url` as a requestor: one hub's URL, or those of several hubs of one
 * market (an array, or one string with commas), of which it joins the first that answers and,
 * when that one dies, dials the next (`requestor.url` says which it is on).
 *
 * A wss:// hub's certificate is verified against `ca` (the CA that signed it: the path of
 * its PEM file, its PEM text, or the bytes of its PEM file) or, without it, Node's trusted CAs.
 *
 * Rejects with ConnectionLostError when the hub cannot be reached, does not answer or
 * presents a certificate that is not trusted (the message says which),
 * UnsupportedVersionError when it speaks another protocol or major version,
 * UnauthorizedError when it refuses the token, and UsageError for a URL that is not a
 * hub's, a `ca` file that cannot be read, a `ca` that is no PEM certificate, or one that
 * comes with a ws:// url.
 *
 * Until it is closed, the requestor is closed on SIGINT (Ctrl-C) or SIGTERM, releasing
 * what it holds, before the process exits with 130 or 143 (`./signals.js` says how this
 * goes with a program's own listeners); `releaseOnSignal: false` leaves signals alone.
 * @param {string | string[]} url e.g. "ws://127.0.0.1:7465", "wss://hub.example:7465", ["ws://a:7465", "ws://b:7465"]
 * @param {import("../requestor.js").ConnectOptions} [options]
 * @returns {Promise<import("../requestor.js").Requestor>}
 */
export declare function connect(url: string | string[], options?: import("../requestor.js").ConnectOptions): Promise<import("../requestor.js").Requestor>;
