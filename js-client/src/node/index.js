/**
 * kiln-client for Node.js: the `ws` package (or, for ws://, the runtime's global WebSocket
 * when it has one), and local files streamed from and to disk.
 *
 *     import { connect } from "kiln-client";
 *     const requestor = await connect("ws://127.0.0.1:7465");
 *     const overTls = await connect("wss://hub.example:7465", { ca: readFileSync("ca.pem") });
 * @module
 */

import WebSocket from "ws";

import { checkHubUrl } from "../connection.js";
import { UsageError } from "../errors.js";
import { connectWith } from "../requestor.js";
import { openArchive, openSource, saveDownload } from "./files.js";

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
};

/**
 * The `ca` option as `ws` takes it, checked: PEM text of at least one certificate.
 * @param {string} url
 * @param {unknown} ca
 */
function trusted(url, ca) {
  if (!/^wss:/i.test(url)) throw new UsageError(`the ca option is for a wss:// hub, and ${url} is not one`);
  if (typeof ca !== "string" && !(ca instanceof Uint8Array)) {
    throw new UsageError("ca is the PEM text of the CA's certificate: a string, a Buffer or a Uint8Array");
  }
  const pem = typeof ca === "string" ? Buffer.from(ca) : Buffer.from(ca.buffer, ca.byteOffset, ca.byteLength);
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new UsageError("ca holds no PEM certificate (no -----BEGIN CERTIFICATE----- in it)");
  }
  return pem;
}

/**
 * Connect to the hub at `url` as a requestor.
 *
 * A wss:// hub's certificate is verified against `ca` (the PEM text or bytes of the CA
 * that signed it) or, without it, Node's trusted CAs.
 *
 * Rejects with ConnectionLostError when the hub cannot be reached, does not answer or
 * presents a certificate that is not trusted (the message says which),
 * UnsupportedVersionError when it speaks another protocol or major version,
 * UnauthorizedError when it refuses the token, and UsageError for a URL that is not a
 * hub's or a `ca` that is no PEM certificate or comes with a ws:// url.
 * @param {string} url e.g. "ws://127.0.0.1:7465", "wss://hub.example:7465"
 * @param {{token?: string, name?: string, timeoutMs?: number, ca?: string | Uint8Array}} [options]
 */
export async function connect(url, options = {}) {
  checkHubUrl(url); // before the ca option is judged against it
  if (options.ca === undefined) return connectWith(platform, url, options);
  const ca = trusted(url, options.ca);
  return connectWith({ ...platform, openSocket: (u, protocols) => openWs(u, protocols, ca) }, url, options);
}
