// requestor.listActivities (protocol 1.3) against a stand-in hub: what it sends, what it
// makes of the hub's activity_list or error, and what it refuses before sending anything.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  LocalProtocolError,
  RemoteProtocolError,
  UnauthorizedError,
  UnsupportedVersionError,
} from "../../src/errors.js";
import { Requestor } from "../../src/requestor.js";
import { LIMITS, connected, tick } from "../support/fake_socket.js";

const PLATFORM = { openSocket: () => assert.fail("no socket"), files: {}, images: {} };

async function requestor(version = "1.3") {
  const { socket, conn } = await connected(LIMITS, version);
  return { socket, requestor: new Requestor(conn, /** @type {any} */ (PLATFORM)) };
}

const RESOURCES = { cpus: 1, memory: 2 ** 28, storage: 0 };
const READY = {
  id: "0a1f", requestor: "alice", credential: 3, provider: "p1", state: "ready", resources: RESOURCES, group: "job-1",
  started: 1700000000.5, image: "kiln-busybox:latest",
};
const CREATING = { id: "3c9e", requestor: "bob", provider: "p2", state: "creating", resources: RESOURCES };

/** The one message the client sent, once it had a moment. */
async function sentOne(socket) {
  await tick();
  const sent = socket.take();
  assert.equal(sent.length, 1, JSON.stringify(sent));
  return sent[0];
}

test("listActivities asks for the requestor's own by default and resolves to the hub's entries", async () => {
  const { socket, requestor: r } = await requestor();
  const listing = r.listActivities();
  const ask = await sentOne(socket);
  assert.deepEqual(ask, { type: "activities", id: ask.id, all: false, limit: 1000 });
  socket.receive({ type: "activity_list", re: ask.id, activities: [READY], matched: 1 });
  assert.deepEqual(await listing, [READY]);
  assert.deepEqual(r.activities, [], "listing adopts nothing: the activities getter is what this side rented");
});

test("listActivities({all: true}) asks for every activity; entries keep their fields, absent ones null or missing", async () => {
  const { socket, requestor: r } = await requestor();
  const listing = r.listActivities({ all: true, limit: 2 });
  const ask = await sentOne(socket);
  assert.deepEqual(ask, { type: "activities", id: ask.id, all: true, limit: 2 });
  socket.receive({ type: "activity_list", re: ask.id, activities: [READY, CREATING], matched: 7 });
  const [ready, creating] = await listing;
  assert.equal(ready.started, 1700000000.5);
  assert.equal(ready.group, "job-1");
  assert.equal(creating.state, "creating");
  assert.equal(ready.credential, 3);
  assert.equal(creating.credential ?? null, null, "a requestor of the shared token or an open hub: no credential");
  assert.equal(creating.started ?? null, null);
  assert.equal(creating.image ?? null, null);
});

test("without an admin credential, all is UnauthorizedError and the connection goes on", async () => {
  const { socket, requestor: r } = await requestor();
  const listing = r.listActivities({ all: true });
  const ask = await sentOne(socket);
  socket.receive({ type: "error", re: ask.id, code: "unauthorized", message: "needs an admin credential" });
  await assert.rejects(listing, (e) => e instanceof UnauthorizedError && e.code === "unauthorized");
  const again = r.listActivities();
  const next = await sentOne(socket);
  socket.receive({ type: "activity_list", re: next.id, activities: [], matched: 0 });
  assert.deepEqual(await again, []);
});

test("a hub below 1.3, a bad limit or a bad reply: refused, and nothing sent for the first two", async () => {
  const old = await requestor("1.2");
  await assert.rejects(old.requestor.listActivities(), UnsupportedVersionError);
  await assert.rejects(old.requestor.listActivities({ all: true }), UnsupportedVersionError);
  await tick();
  assert.deepEqual(old.socket.take(), []);

  const { socket, requestor: r } = await requestor();
  for (const limit of [0, 1001]) {
    await assert.rejects(r.listActivities({ limit }), (e) => e instanceof LocalProtocolError && e.code === "bad_message");
  }
  await tick();
  assert.deepEqual(socket.take(), []);

  const listing = r.listActivities();
  const ask = await sentOne(socket);
  socket.receive({ type: "activity_list", re: ask.id, activities: [{ ...READY, state: "running" }], matched: 1 });
  await assert.rejects(listing, (e) => e instanceof RemoteProtocolError && e.code === "bad_message");
});
