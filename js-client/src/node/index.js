/**
 * kiln-client for Node.js: the `ws` package (or the runtime's global WebSocket when it
 * has one), and local files streamed from and to disk.
 *
 *     import { connect } from "kiln-client";
 *     const requestor = await connect("ws://127.0.0.1:7465");
 * @module
 */

import WebSocket from "ws";

import { connectWith } from "../requestor.js";
import { openArchive, openSource, saveDownload } from "./files.js";

export * from "../common.js";

/** Larger than any frame the hub sends (its `max_frame_bytes` is 4 MiB). */
const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

/** @type {import("../requestor.js").Platform} */
const platform = {
  openSocket(url, protocols) {
    const Native = /** @type {any} */ (globalThis).WebSocket;
    if (typeof Native === "function") return new Native(url, protocols);
    return /** @type {any} */ (new WebSocket(url, protocols, { perMessageDeflate: false, maxPayload: MAX_PAYLOAD_BYTES }));
  },
  files: { open: openSource, save: saveDownload },
  images: { open: openArchive },
};

/**
 * Connect to the hub at `url` as a requestor.
 *
 * Rejects with ConnectionLostError when the hub cannot be reached or does not answer,
 * UnsupportedVersionError when it speaks another protocol or major version, and
 * UnauthorizedError when it refuses the token.
 * @param {string} url e.g. "ws://127.0.0.1:7465"
 * @param {{token?: string, name?: string, timeoutMs?: number}} [options]
 */
export function connect(url, options = {}) {
  return connectWith(platform, url, options);
}
