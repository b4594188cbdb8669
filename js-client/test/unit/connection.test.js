// The connection pumps the session over a socket: a stand-in socket (the Socket surface
// browsers and `ws` share) feeds it literal frames and records what it sends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { Connection, checkHubUrl, dialError } from "../../src/connection.js";
import { FakeSocket, LIMITS, connected, frame, tick } from "../support/fake_socket.js";
import {
  CancelledError,
  ConnectionClosedError,
  ConnectionLostError,
  ImageNotFoundError,
  LocalProtocolError,
  UnauthorizedError,
  UnsupportedVersionError,
  UsageError,
} from "../../src/errors.js";

/** The hub URLs both SDKs judge alike (tests/service/test_cli_errors.py reads them too). */
const HUB_URLS = JSON.parse(readFileSync(new URL("../../../protocol/v1/vectors/hub-urls/hub-urls.json", import.meta.url), "utf8"));

test("the handshake: hello once the socket opens, open once welcomed", { timeout: 5_000 }, async () => {
  const { conn } = await connected();
  assert.equal(conn.session.limits.chunk_bytes, 4);
});

test("a URL that is not a hub's is a UsageError that says why and what one looks like, before any dial", { timeout: 5_000 }, async () => {
  for (const [url, why] of Object.entries(HUB_URLS.bad)) {
    let dialled = false;
    const opening = Connection.open(() => { dialled = true; return new FakeSocket(); }, url, { name: "t" });
    await assert.rejects(opening, (e) => e instanceof UsageError && e.code === "bad_message" && e.message ===
      `${JSON.stringify(url)} is not a hub URL (${why}): ${HUB_URLS.form}`);
    assert.equal(dialled, false, url);
  }
  assert.throws(() => checkHubUrl(""), (e) => e instanceof UsageError && e.message === `no hub URL given: ${HUB_URLS.form}`);
  assert.ok(HUB_URLS.good.length > 0, "vectors of both verdicts");
  for (const url of HUB_URLS.good) {
    assert.equal(checkHubUrl(url), url);
  }
});

test("a refusal, a silent hub or another subprotocol fail the handshake and close the socket", { timeout: 5_000 }, async () => {
  const refused = new FakeSocket();
  const opening = Connection.open(() => refused, "ws://hub", { name: "t" });
  refused.open();
  refused.receive({ type: "error", code: "unauthorized", message: "wrong token" });
  await assert.rejects(opening, (e) => e instanceof UnauthorizedError && /wrong token/.test(e.message));
  assert.equal(refused.readyState, 3);

  const silent = new FakeSocket();
  const waiting = Connection.open(() => silent, "ws://hub", { name: "t", timeoutMs: 20 });
  silent.open();
  await assert.rejects(waiting, (e) => e instanceof ConnectionLostError && /did not answer hello/.test(e.message));
  assert.equal(silent.readyState, 3);

  const other = new FakeSocket("kiln.v2");
  const mismatched = Connection.open(() => other, "ws://hub", { name: "t" });
  other.open();
  await assert.rejects(mismatched, UnsupportedVersionError);
  assert.deepEqual(other.take(), [], "no hello to a hub of another protocol");

  const unreachable = new FakeSocket();
  const dialing = Connection.open(() => unreachable, "ws://hub", { name: "t" });
  unreachable.emit("error", { message: "connect ECONNREFUSED" });
  unreachable.drop();
  await assert.rejects(dialing, (e) => e instanceof ConnectionLostError && /ECONNREFUSED/.test(e.message));
});

test("a failed dial says why: a certificate not trusted, or for another address; ws:// and wss:// mixed up", { timeout: 5_000 }, async () => {
  const tlsError = (code, message) => Object.assign(new Error(message), { code });
  const untrusted = new FakeSocket();
  const dialing = Connection.open(() => untrusted, "wss://hub", { name: "t" });
  untrusted.emit("error", { error: tlsError("SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain") });
  untrusted.drop();
  await assert.rejects(dialing, (e) => e instanceof ConnectionLostError && e.message ===
    "the hub at wss://hub presented a certificate that is not trusted (self-signed certificate in certificate chain): " +
    "pass the CA that signed it as the ca option");
  assert.match(dialError("wss://hub", tlsError("ERR_TLS_CERT_ALTNAME_INVALID", "Host: hub. is not in the cert's altnames")),
    /^the hub at wss:\/\/hub presented a certificate for another address \(Host: hub/);
  assert.match(dialError("ws://hub", tlsError("ECONNRESET", "socket hang up")), /socket hang up \(a hub that serves TLS has a wss:\/\/ address\)$/);
  assert.match(dialError("wss://hub", tlsError("ECONNRESET", "disconnected")), /\(does the hub serve TLS\? a hub without --tls-cert has a ws:\/\/ address\)$/);
  assert.equal(dialError("ws://hub", tlsError("ECONNREFUSED", "connect ECONNREFUSED")), null, "nothing to add");
  assert.equal(dialError("wss://hub", { type: "error" }), null, "a browser's error event tells nothing");
});

test("an invalid request is refused before anything is sent", { timeout: 5_000 }, async () => {
  const { socket, conn } = await connected();
  assert.throws(
    () => conn.request({ type: "upload", id: conn.newId(), activity: "a", path: "/x", size: 1, mode: 0o4755 }),
    (e) => e instanceof LocalProtocolError && e.code === "bad_message",
  );
  assert.deepEqual(socket.take(), []);
});

test("replies settle their requests; an error reply is its class, with the provider it names", { timeout: 5_000 }, async () => {
  const { socket, conn } = await connected();
  const market = conn.request({ type: "market", id: conn.newId() });
  const rent = conn.request({ type: "rent", id: conn.newId(), image: "x", demand: {} });
  assert.deepEqual(socket.take().map((m) => [m.type, m.id]), [["market", 1], ["rent", 2]]);
  socket.receive({ type: "error", re: 2, code: "image_not_found", message: "no x", provider: "p1" });
  socket.receive({ type: "market_info", re: 1, providers: [], matched: 0, activities: 0 });
  assert.equal((await market).type, "market_info");
  await assert.rejects(rent, (e) => e instanceof ImageNotFoundError && e.provider === "p1");
});

test("a lost connection fails what is open with ConnectionLostError; a close by us with ConnectionClosedError", { timeout: 5_000 }, async () => {
  const lost = await connected();
  const pending = lost.conn.request({ type: "market", id: lost.conn.newId() });
  lost.socket.drop();
  await assert.rejects(pending, (e) => e instanceof ConnectionLostError && /without a close frame/.test(e.message));
  assert.throws(() => lost.conn.request({ type: "market", id: lost.conn.newId() }), ConnectionLostError);
  assert.deepEqual(lost.events.map((e) => e.type), ["closed"]);

  const closed = await connected();
  const waiting = closed.conn.request({ type: "market", id: closed.conn.newId() });
  await closed.conn.close();
  await assert.rejects(waiting, (e) => e instanceof ConnectionClosedError && !(e instanceof ConnectionLostError));
});

test("an upload writes within the credit granted, in chunks, and waits for a full socket to drain", { timeout: 5_000 }, async () => {
  const { socket, conn } = await connected();
  const { sender, reply } = conn.openUpload({ type: "upload", id: conn.newId(), activity: "a", path: "/f", size: 10 });
  socket.take();
  const writing = sender.write(new TextEncoder().encode("0123456789"));
  await tick();
  assert.deepEqual(socket.take(), [], "no credit yet");
  socket.receive({ type: "credit", stream: 1, chunks: 2 });
  await tick();
  assert.deepEqual(socket.take(), [frame(0, 1, "0123"), frame(0, 1, "4567")]);
  socket.bufferedAmount = 64 * 2 ** 20;
  socket.receive({ type: "credit", stream: 1, chunks: 1 });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(socket.take(), [], "the socket is full");
  socket.bufferedAmount = 0;
  await writing;
  sender.end();
  assert.deepEqual(socket.take(), [frame(0, 1, "89"), frame(1, 1)]);
  socket.receive({ type: "done", re: 1, bytes: 10 });
  assert.equal((await reply.promise).type, "done");
});

test("an error reply fails the upload's writer", { timeout: 5_000 }, async () => {
  const { socket, conn } = await connected();
  const { sender, reply } = conn.openUpload({ type: "upload", id: conn.newId(), activity: "a", path: "/f", size: 10 });
  const writing = sender.write(new Uint8Array(10));
  socket.receive({ type: "error", re: 1, code: "not_a_file", message: "/f is a folder" });
  await assert.rejects(writing, (e) => e.code === "not_a_file");
  await assert.rejects(reply.promise, (e) => e.code === "not_a_file");
});

test("a download yields its info and chunks and grants credit back in half-window batches", { timeout: 5_000 }, async () => {
  const { socket, conn } = await connected();
  const { receiver, reply } = conn.openDownload({ type: "download", id: conn.newId(), activity: "a", path: "/f", window: 4 });
  socket.take();
  socket.receive({ type: "download_info", re: 1, kind: "file", size: 12 });
  assert.equal((await receiver.info.promise).size, 12);
  const chunks = receiver[Symbol.asyncIterator]();
  for (const part of ["abcd", "efgh", "ijkl"]) socket.receiveBinary(frame(0, 1, part));
  const read = async () => Buffer.from((await chunks.next()).value).toString();
  assert.deepEqual([await read(), await read()], ["abcd", "efgh"]);
  assert.deepEqual(socket.take(), [{ type: "credit", stream: 1, chunks: 2 }]);
  socket.receiveBinary(frame(1, 1));
  socket.receive({ type: "done", re: 1, bytes: 12 });
  assert.equal(await read(), "ijkl");
  assert.equal((await chunks.next()).done, true);
  assert.deepEqual(socket.take(), [], "no credit for a stream that has ended");
  assert.equal((await reply.promise).type, "done");
});

test("notices the connection has no use for reach onEvent", { timeout: 5_000 }, async () => {
  const { socket, events } = await connected();
  socket.receive({ type: "activity_lost", activity: "a1", code: "provider_lost", reason: "gone" });
  socket.receive({ type: "done", re: 99 });
  assert.deepEqual(events.map((e) => e.type), ["notified", "violated"]);
  assert.equal(events[0].message.activity, "a1");
});

test("requests past the hub's max_pending wait in line and go as earlier ones end", { timeout: 5_000 }, async () => {
  const { socket, conn } = await connected({ ...LIMITS, max_pending: 2 });
  const market = () => ({ type: "market", id: conn.newId() });
  const replies = [market(), market(), market(), market()].map((m) => conn.request(m).catch((e) => e));
  assert.deepEqual(socket.take().map((m) => m.id), [1, 2], "two open at once, as the hub allows");
  assert.throws(() => conn.request({ type: "market", id: conn.newId(), bad: 1 }), LocalProtocolError);
  conn.cancel(3);
  socket.receive({ type: "market_info", re: 1, providers: [], matched: 0, activities: 0 });
  assert.deepEqual(socket.take().map((m) => m.id), [4], "the cancelled one was never sent");
  assert.ok((await replies[2]) instanceof CancelledError);
  socket.drop();
  assert.ok((await replies[3]) instanceof ConnectionLostError);
  assert.equal((await replies[0]).type, "market_info");
});
