/**
 * kiln-client for browsers (and any runtime with a global WebSocket): the native
 * WebSocket, Blobs for `sendFile` and `pushImage`, WritableStreams for `downloadFile`.
 * Imports nothing from Node.
 *
 *     import { connect } from "kiln-client";
 *     const requestor = await connect("ws://127.0.0.1:7465");
 * @module
 */

import { UsageError } from "./errors.js";
import { readArchive } from "./image.js";
import { connectWith } from "./requestor.js";

export * from "./common.js";

const READ_BYTES = 256 * 1024;

/** @type {import("./activity.js").Files} */
const files = {
  async open(local) {
    if (typeof Blob === "undefined" || !(local instanceof Blob)) {
      throw new UsageError("in a browser, sendFile takes a Blob or File (e.g. from an <input type=file>)");
    }
    const blob = local;
    return {
      size: blob.size,
      mode: 0o644,
      chunks: (async function* () {
        // Slices, not blob.stream(): each read is bounded and awaited in turn.
        for (let at = 0; at < blob.size; at += READ_BYTES) {
          yield new Uint8Array(await blob.slice(at, at + READ_BYTES).arrayBuffer());
        }
      })(),
      close: async () => {},
    };
  },
  async save(_info, chunks, dest) {
    if (typeof WritableStream === "undefined" || !(dest instanceof WritableStream)) {
      throw new UsageError("in a browser, downloadFile writes to a WritableStream; use downloadBytes for memory");
    }
    const writer = dest.getWriter();
    try {
      for await (const chunk of chunks) {
        await writer.ready;
        await writer.write(chunk);
      }
      await writer.close();
    } catch (e) {
      await writer.abort(e).catch(() => {});
      throw e;
    }
    return dest;
  },
};

/**
 * A `docker save` archive in a Blob (or File), read by slices: never whole.
 * @param {unknown} local
 */
function openArchive(local) {
  if (typeof Blob === "undefined" || !(local instanceof Blob)) {
    throw new UsageError("in a browser, pushImage takes a Blob or File of a docker save archive");
  }
  const blob = local;
  /** @param {number} start @param {number} end */
  const slice = async (start, end) => new Uint8Array(await blob.slice(start, end).arrayBuffer());
  return readArchive({
    name: "name" in blob && typeof blob.name === "string" ? blob.name : "the image archive",
    size: blob.size,
    read: (position, length) => slice(position, position + length),
    async *chunks(position, length, chunkBytes) {
      for (let at = position; at < position + length; at += chunkBytes) {
        yield await slice(at, Math.min(at + chunkBytes, position + length));
      }
    },
    close: async () => {},
  });
}

/** @type {import("./requestor.js").Platform} */
const platform = {
  openSocket: (url, protocols) => /** @type {any} */ (new WebSocket(url, protocols)),
  files,
  images: { open: async (local) => openArchive(local) },
};

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
export async function connect(url, options = {}) {
  if (options.ca !== undefined) {
    throw new UsageError("a browser verifies the hub's certificate with its own trust store: the ca option is for Node");
  }
  return connectWith(platform, url, options);
}
