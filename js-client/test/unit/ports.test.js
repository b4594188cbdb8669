// Connections to a port of a container (protocol 1.7), played through a stand-in socket: the
// tests are the hub, feeding literal messages and frames and reading what the client sends.
// The Node Duplex, the browser's PortSocket (which needs nothing of Node), a forward over a
// real local socket, and publish.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect as dial } from "node:net";

import { Activity } from "../../src/activity.js";
import { ActivityError, ConnectionRefusedError, TransferFailedError, UnsupportedVersionError, UsageError } from "../../src/errors.js";
import { openSource, saveDownload } from "../../src/node/files.js";
import { NODE_PORTS, PortDuplex } from "../../src/node/ports.js";
import { PortSocket } from "../../src/ports.js";
import { connected, frame, tick } from "../support/fake_socket.js";

const RENTED = {
  type: "rented", re: 1, activity: "a1", provider: "p1", cached: true,
  resources: { cpus: 1, memory: 256 * 2 ** 20, storage: 0 },
};
const FILES = { open: openSource, save: saveDownload };

/** An activity over a stand-in hub of 1.7 (chunks of 4 bytes, a window of 4 at most), as Node or a browser has it. */
async function setup({ version = "1.7", node = true } = {}) {
  const { socket, conn } = await connected(undefined, version);
  return { socket, act: new Activity(conn, RENTED, FILES, () => {}, node ? NODE_PORTS : undefined) };
}

/** What the client sent until it sent something, within a second. */
async function sent(socket) {
  for (let i = 0; i < 1000; i++) {
    const out = socket.take();
    if (out.length > 0) return out;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return [];
}

/** Open a connection: the client sends connect, the "provider" grants `credit` (the port answered). */
async function opened(socket, act, credit = 2) {
  const connecting = act.connect(8080);
  const [message] = await sent(socket);
  assert.deepEqual(message, { type: "connect", id: message.id, activity: "a1", port: 8080, window: 4 });
  socket.receive({ type: "credit", stream: message.id, chunks: credit });
  return { sock: await connecting, id: message.id };
}

test("connect resolves once the port answered; a port where nothing listens rejects with ConnectionRefusedError", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const refused = act.connect(9);
  const [message] = await sent(socket);
  socket.receive({ type: "error", re: message.id, code: "connection_refused", message: "nothing listens on port 9" });
  await assert.rejects(refused, (e) => e instanceof ConnectionRefusedError && e instanceof ActivityError);
  await assert.rejects(act.connect(0), UsageError);
  const old = await setup({ version: "1.6" });
  await assert.rejects(old.act.connect(8080), UnsupportedVersionError);
  await assert.rejects(old.act.publish(8080), UnsupportedVersionError);
  assert.deepEqual(old.socket.take(), [], "nothing is sent to a hub below 1.7");
});

test("Node: a Duplex whose writes wait for credit, whose end() is a half-close and whose reads grant credit", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const { sock, id } = await opened(socket, act);
  assert.ok(sock instanceof PortDuplex);
  const written = new Promise((resolve) => sock.write("0123456789", resolve));
  assert.deepEqual(await sent(socket), [frame(0, id, "0123"), frame(0, id, "4567")]);
  await tick();
  assert.deepEqual(socket.take(), [], "the credit is spent");
  socket.receive({ type: "credit", stream: id, chunks: 4 });
  await written;
  assert.deepEqual(socket.take(), [frame(0, id, "89")]);
  sock.end();
  assert.deepEqual(await sent(socket), [frame(1, id)], "end() sends END");
  // The service still answers after our half-close: its bytes, then its END.
  const chunks = [];
  sock.on("data", (chunk) => chunks.push(chunk.toString()));
  const ended = new Promise((resolve) => sock.once("end", resolve));
  const closed = new Promise((resolve) => sock.once("close", resolve));
  for (const text of ["HTTP", "/1.0"]) socket.receiveBinary(frame(0, id, text));
  assert.deepEqual(await sent(socket), [{ type: "credit", stream: id, chunks: 2 }], "credit goes back as chunks are taken");
  socket.receiveBinary(frame(1, id));
  await ended;
  socket.receive({ type: "done", re: id, bytes: 8 });
  await closed;
  assert.equal(chunks.join(""), "HTTP/1.0");
  assert.equal(act.moved, 18);
});

test("Node: destroy() resets the connection (ABORT); the service's reset destroys the Duplex with TransferFailedError", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const first = await opened(socket, act);
  first.sock.destroy();
  assert.deepEqual((await sent(socket)).slice(0, 1), [frame(2, first.id, "the requestor closed the connection")]);
  const second = await opened(socket, act);
  const failed = new Promise((resolve) => second.sock.once("error", resolve));
  second.sock.resume();
  socket.receiveBinary(frame(2, second.id, "reset"));
  assert.ok((await failed) instanceof TransferFailedError);
});

test("a browser: a PortSocket with a WebSocket's surface: open, message events, send, close when both sides ended", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup({ node: false });
  const { sock, id } = await opened(socket, act, 4);
  assert.ok(sock instanceof PortSocket);
  assert.equal(sock.readyState, PortSocket.OPEN);
  sock.binaryType = "arraybuffer";
  const events = [];
  const closed = new Promise((resolve) => {
    sock.onclose = (event) => resolve(event);
  });
  sock.addEventListener("open", () => events.push("open"));
  sock.onmessage = (event) => events.push(new TextDecoder().decode(event.data));
  sock.send("GET /");
  sock.send(new Uint8Array([13, 10]));
  assert.equal(sock.bufferedAmount, 7);
  const frames = await sent(socket);
  if (frames.length < 3) frames.push(...(await sent(socket)));
  assert.deepEqual(frames, [frame(0, id, "GET "), frame(0, id, "/"), frame(0, id, "\r\n")], "in order, within the credit");
  socket.receiveBinary(frame(0, id, "200 "));
  socket.receiveBinary(frame(0, id, "OK"));
  socket.receiveBinary(frame(1, id));
  // The service closed its side: the socket ends its own, as a WebSocket cannot half-close.
  assert.deepEqual(await sent(socket), [frame(1, id)]);
  assert.equal(sock.readyState, PortSocket.CLOSING);
  assert.throws(() => sock.send("late"), { name: "InvalidStateError" });
  socket.receive({ type: "done", re: id, bytes: 6 });
  const event = await closed;
  assert.deepEqual([event.code, event.wasClean, sock.readyState], [1000, true, PortSocket.CLOSED]);
  assert.deepEqual(events, ["open", "200 ", "OK"]);
});

test("a browser: read() and write() promises, null at EOF; a broken connection fires error, then close", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup({ node: false });
  const { sock, id } = await opened(socket, act, 1);
  const writing = sock.write("abcdef");
  assert.deepEqual(await sent(socket), [frame(0, id, "abcd")]);
  socket.receive({ type: "credit", stream: id, chunks: 1 });
  await writing;
  assert.deepEqual(socket.take(), [frame(0, id, "ef")]);
  socket.receiveBinary(frame(0, id, "xy"));
  assert.equal(new TextDecoder().decode(await sock.read()), "xy");
  socket.receiveBinary(frame(1, id));
  assert.equal(await sock.read(), null);
  socket.receive({ type: "credit", stream: id, chunks: 3 });
  await sock.write("after EOF"); // a half-close: this side may still write
  assert.equal(socket.take().length, 3);
  const errors = [];
  sock.onerror = (event) => errors.push(event.error);
  const closed = new Promise((resolve) => sock.addEventListener("close", resolve));
  socket.receive({ type: "error", re: id, code: "provider_lost", message: "provider 'p1' disconnected" });
  const event = await closed;
  assert.equal(event.wasClean, false);
  assert.equal(errors[0].code, "provider_lost");
});

test("forward carries each local connection over a connect of its own; a refused one is reset", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const fwd = await act.forward(8080, { localPort: 0 });
  assert.equal(fwd.host, "127.0.0.1");
  const client = dial(fwd.port, "127.0.0.1");
  const [connect] = await sent(socket);
  assert.equal(connect.type, "connect");
  socket.receive({ type: "credit", stream: connect.id, chunks: 4 });
  client.write("ping");
  assert.deepEqual(await sent(socket), [frame(0, connect.id, "ping")]);
  const answer = new Promise((resolve) => client.once("data", (data) => resolve(data.toString())));
  socket.receiveBinary(frame(0, connect.id, "pong"));
  assert.equal(await answer, "pong");
  client.end();
  assert.deepEqual(await sent(socket), [frame(1, connect.id)], "the local half-close is an END");
  const refusedClient = dial(fwd.port, "127.0.0.1");
  const reset = new Promise((resolve) => refusedClient.once("close", resolve));
  refusedClient.on("error", () => {});
  const [second] = await sent(socket);
  socket.receive({ type: "error", re: second.id, code: "connection_refused", message: "nothing listens" });
  await reset;
  await fwd.close();
  client.destroy();
  const browser = await setup({ node: false });
  await assert.rejects(browser.act.forward(8080), UsageError);
});

test("publish gives the URL and token; revoke() unpublishes once", { timeout: 5_000 }, async () => {
  const { socket, act } = await setup();
  const publishing = act.publish(8080);
  const [publish] = await sent(socket);
  assert.deepEqual(publish, { type: "publish", id: publish.id, activity: "a1", port: 8080 });
  const token = "kq3Vt0n1mQ8Rr2yZx7Hc4dLp9sWb5eFa";
  socket.receive({ type: "published", re: publish.id, token, url: `http://127.0.0.1:7466/s/${token}/` });
  const pub = await publishing;
  assert.deepEqual([pub.url, pub.token], [`http://127.0.0.1:7466/s/${token}/`, token]);
  const revoking = [pub.revoke(), pub.revoke()];
  const [unpublish] = await sent(socket);
  assert.deepEqual(unpublish, { type: "unpublish", id: unpublish.id, token });
  socket.receive({ type: "done", re: unpublish.id });
  await Promise.all(revoking);
  assert.deepEqual(socket.take(), [], "one unpublish for two revokes");
  const again = act.unpublish(token);
  const [other] = await sent(socket);
  socket.receive({ type: "error", re: other.id, code: "not_published", message: "no such publication of yours" });
  await assert.rejects(again, (e) => e instanceof ActivityError && e.code === "not_published");
});
