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

import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

import { hubUrls } from "../connection.js";
import { UsageError } from "../errors.js";
import { connectWith } from "../requestor.js";
import { openArchive, openSource, saveDownload } from "./files.js";
import { NODE_PORTS } from "./ports.js";
import { releaseOnSignal } from "./signals.js";

export * from "../common.js";

/** Larger than any frame the hub sends (its `max_frame_bytes` is 4 MiB). */
const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

/**
 * A `ws` socket; `ca` (PEM) is then the only CA it trusts for a wss:// hub.
 * @param {string} url
 * @param {string[]} protocols
 * @param {Buffer} [ca]
 */
function openWs(url, protocols, ca) {
  const options = { perMessageDeflate: false, maxPayload: MAX_PAYLOAD_BYTES, ...(ca === undefined ? {} : { ca }) };
  return /** @type {any} */ (new WebSocket(url, protocols, options));
}

/** @type {import("../requestor.js").Platform} */
const platform = {
  openSocket(url, protocols) {
    // wss:// goes through `ws` even where Node has a WebSocket: its errors name the TLS failure.
    const Native = /** @type {any} */ (globalThis).WebSocket;
    if (typeof Native === "function" && !/^wss:/i.test(url)) return new Native(url, protocols);
    return openWs(url, protocols);
  },
  files: { open: openSource, save: saveDownload },
  images: { open: openArchive },
  ports: NODE_PORTS,
};

/**
 * The `ca` option as `ws` takes it, checked: PEM text of at least one certificate. A string
 * that holds "-----BEGIN" is PEM text; any other string (or a file: URL) is the path of a
 * PEM file, read here, as Python's `ssl=` takes one. Every hub of `urls` must be a wss:// one.
 * @param {string[]} urls
 * @param {unknown} ca
 * @returns {Promise<Buffer>}
 */
async function trusted(urls, ca) {
  const plain = urls.find((url) => !/^wss:/i.test(url));
  if (plain !== undefined) throw new UsageError(`the ca option is for a wss:// hub, and ${plain} is not one`);
  /** @type {Buffer} */
  let pem;
  let source = "ca";
  if (ca instanceof Uint8Array) {
    pem = Buffer.from(ca.buffer, ca.byteOffset, ca.byteLength);
  } else if (typeof ca === "string" && ca.includes("-----BEGIN")) {
    pem = Buffer.from(ca);
  } else if (typeof ca === "string" || ca instanceof URL) {
    source = ca instanceof URL ? fileURLToPath(ca) : ca;
    try {
      pem = await readFile(ca);
    } catch (e) {
      const error = /** @type {NodeJS.ErrnoException} */ (e);
      // "ENOENT: no such file or directory, open 'ca.pem'": the middle says it.
      const why = /^[A-Z]+: ([^,]+)/.exec(error.message)?.[1] ?? error.message;
      throw new UsageError(`cannot read the CA certificate ${source}: ${why}`, { cause: e });
    }
  } else {
    throw new UsageError("ca is the CA's certificate: the path of its PEM file, its PEM text, or the bytes of its PEM file");
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new UsageError(`${source} holds no PEM certificate of a CA to trust (no -----BEGIN CERTIFICATE----- in it)`);
  }
  return pem;
}

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
export async function connect(url, options = {}) {
  const urls = hubUrls(url); // before the ca option is judged against them
  const release = options.releaseOnSignal ?? true;
  if (typeof release !== "boolean") throw new UsageError(`releaseOnSignal is true or false, not ${JSON.stringify(release)}`);
  /** @type {import("../requestor.js").Platform} */
  let dialing = platform;
  if (options.ca !== undefined) {
    const ca = await trusted(urls, options.ca);
    dialing = { ...platform, openSocket: (u, protocols) => openWs(u, protocols, ca) };
  }
  const requestor = await connectWith(dialing, urls, options);
  if (release) releaseOnSignal(requestor);
  return requestor;
}
