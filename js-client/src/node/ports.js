/**
 * Connections to a port of a container in Node: each a `stream.Duplex` over a
 * {@link PortChannel}, and `act.forward`, a local TCP server whose every accepted socket is
 * carried over a connect of its own.
 *
 * The Duplex maps Node's stream semantics onto the protocol's: it pulls the service's bytes
 * only as fast as they are consumed (`_read`; credit goes back as chunks are taken, so
 * backpressure reaches the service), a write waits for the provider's credit (`_write`),
 * `end()` is a half-close (END: the service reads EOF), `'end'` comes when the service
 * closed its side, and `destroy(err)` resets the connection (ABORT).
 * @module
 */

import { createServer } from "node:net";
import { Duplex, pipeline } from "node:stream";

import { UsageError } from "../errors.js";

/** @typedef {import("../ports.js").PortChannel} PortChannel */
/** @typedef {import("../ports.js").ForwardOptions} ForwardOptions */
/** @typedef {import("../ports.js").Forward} Forward */

/** The most connections one forward carries at once (each holds a request at the hub, which bounds them too). */
const MAX_FORWARDED = 1024;

/** A connection to a port of a container as a Node `stream.Duplex` (half-open: each way ends on its own). */
export class PortDuplex extends Duplex {
  /** @param {PortChannel} channel */
  constructor(channel) {
    super({ allowHalfOpen: true });
    this._channel = channel;
    this._pulling = false;
    /** The container's port. */
    this.port = channel.port;
    // A failure while nobody reads or writes (the provider lost, the hub gone) still ends it.
    channel.done.catch((/** @type {Error} */ e) => {
      if (!channel.aborted) this.destroy(e);
    });
  }

  /** Pull the service's bytes while the reading side wants more. */
  _read() {
    if (this._pulling) return;
    this._pulling = true;
    void (async () => {
      try {
        for (;;) {
          const chunk = await this._channel.read();
          if (chunk === null) {
            this.push(null);
            return;
          }
          if (!this.push(chunk)) return;
        }
      } catch (e) {
        if (!this._channel.aborted) this.destroy(/** @type {Error} */ (e));
      } finally {
        this._pulling = false;
      }
    })();
  }

  /**
   * @param {any} chunk
   * @param {BufferEncoding} encoding
   * @param {(error?: Error | null) => void} callback
   */
  _write(chunk, encoding, callback) {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, encoding) : chunk;
    this._channel.write(bytes).then(() => callback(), callback);
  }

  /** @param {(error?: Error | null) => void} callback */
  _final(callback) {
    try {
      this._channel.end();
      callback();
    } catch (e) {
      callback(/** @type {Error} */ (e));
    }
  }

  /**
   * @param {Error | null} error
   * @param {(error?: Error | null) => void} callback
   */
  _destroy(error, callback) {
    // Both ways ended: the connection closes by itself; else it is reset.
    if (!this.readableEnded || !this.writableFinished) {
      this._channel.abort(error?.message ?? "the requestor closed the connection");
    }
    callback(error);
  }
}

/**
 * Listen on `options.host` (default 127.0.0.1) at `options.localPort` (default 0: any free
 * port) and carry each connection accepted over a connect of its own (`open`), piped both
 * ways with their half-closes; a connection the container's port refuses is reset. Resolves
 * once listening.
 * @param {() => Promise<PortChannel>} open
 * @param {ForwardOptions} options
 * @returns {Promise<Forward>}
 */
export async function forward(open, options) {
  const host = options.host ?? "127.0.0.1";
  const localPort = options.localPort ?? 0;
  if (!(Number.isInteger(localPort) && localPort >= 0 && localPort <= 65535)) {
    throw new UsageError(`localPort is a whole number from 0 (any free port) to 65535, not ${JSON.stringify(localPort)}`);
  }
  /** @type {Set<import("node:net").Socket>} */
  const sockets = new Set();
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    open().then(
      (channel) => {
        const remote = new PortDuplex(channel);
        socket.resume();
        // Each way ends on its own (half-close); a failure either way resets both.
        const reset = () => {
          socket.destroy();
          remote.destroy();
        };
        pipeline(socket, remote, (e) => e && reset());
        pipeline(remote, socket, (e) => e && reset());
      },
      () => socket.resetAndDestroy(),
    );
  });
  server.maxConnections = MAX_FORWARDED;
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(localPort, host, () => {
      server.off("error", reject);
      resolve(undefined);
    });
  });
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    port: address.port,
    host,
    async close() {
      const closed = new Promise((resolve) => server.close(() => resolve(undefined)));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** Node's presentation of a connection: a Duplex; and forwarding. */
export const NODE_PORTS = Object.freeze(
  /** @type {import("../ports.js").Ports} */ ({ wrap: (channel) => new PortDuplex(channel), forward }),
);
