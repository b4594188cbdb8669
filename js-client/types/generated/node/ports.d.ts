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
import { Duplex } from "node:stream";
export type PortChannel = import("../ports.js").PortChannel;
export type ForwardOptions = import("../ports.js").ForwardOptions;
export type Forward = import("../ports.js").Forward;
/** A connection to a port of a container as a Node `stream.Duplex` (half-open: each way ends on its own). */
export declare class PortDuplex extends Duplex {
    /** The container's port. */
    port: number;
    /** @param {PortChannel} channel */
    constructor(channel: PortChannel);
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
export declare function forward(open: () => Promise<PortChannel>, options: ForwardOptions): Promise<Forward>;
/** Node's presentation of a connection: a Duplex; and forwarding. */
export declare const NODE_PORTS: Readonly<import("../ports.js").Ports>;
