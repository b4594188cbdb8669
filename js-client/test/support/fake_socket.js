// A stand-in for the WebSocket (the Socket surface browsers and `ws` share): the tests
// play the hub through it, feeding literal messages and frames and reading what was sent.
import assert from "node:assert/strict";

import { Connection } from "../../src/connection.js";
import { PROTOCOL_VERSION } from "../../src/protocol/generated/constants.js";

export const LIMITS = {
  max_message_bytes: 2 ** 20, max_frame_bytes: 2 ** 22, chunk_bytes: 4, max_window: 4,
  max_pending: 8, max_streams: 2, max_output_bytes: 1024,
};

export class FakeSocket {
  constructor(protocol = "kiln.v1") {
    this.protocol = protocol;
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.binaryType = "blob";
    this.sent = [];
    this.listeners = new Map();
  }

  addEventListener(type, listener) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  emit(type, event) {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }

  send(data) {
    this.sent.push(typeof data === "string" ? JSON.parse(data) : Buffer.from(data).toString("hex"));
  }

  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setImmediate(() => this.emit("close", { code, reason: "" }));
  }

  open() {
    this.readyState = 1;
    this.emit("open", {});
  }

  receive(message) {
    this.emit("message", { data: JSON.stringify(message) });
  }

  receiveBinary(hex) {
    const bytes = Buffer.from(hex, "hex");
    this.emit("message", { data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  /** The hub vanishes: no close frame. */
  drop() {
    this.readyState = 3;
    this.emit("close", { code: 1006, reason: "" });
  }

  /** What was sent since the last call. */
  take() {
    const sent = this.sent;
    this.sent = [];
    return sent;
  }
}

/** A binary frame in hex, as `receiveBinary` takes it. */
export const frame = (kind, stream, payload = "") => `0${kind}000000${stream.toString(16).padStart(8, "0")}${Buffer.from(payload).toString("hex")}`;
export const tick = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A connection over a new stand-in socket, welcomed by the "hub" with `limits`
 * ({@link LIMITS} by default).
 */
export async function connected(limits = LIMITS, version = "1.2") {
  const socket = new FakeSocket();
  const opening = Connection.open(() => socket, "ws://hub", { name: "t" });
  socket.open();
  assert.deepEqual(socket.take(), [{ type: "hello", version: PROTOCOL_VERSION, role: "requestor", name: "t", software: "kiln-js/0.1.0" }]);
  socket.receive({ type: "welcome", version, session: "r1", software: "hub", limits });
  const conn = await opening;
  const events = [];
  conn.onEvent = (event) => events.push(event);
  return { socket, conn, events };
}
