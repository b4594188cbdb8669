// A requestor whose connection drops dials again with hello.resume: a stand-in hub (the
// fake socket) plays both connections, feeding literal messages and reading what was sent.
import { test } from "node:test";
import assert from "node:assert/strict";

import { HubRing, MAX_HUB_URLS, hubUrls } from "../../src/connection.js";
import { connectWith } from "../../src/requestor.js";
import { ConnectionClosedError, ConnectionLostError, ProviderLostError, UsageError } from "../../src/errors.js";
import { FakeSocket, LIMITS, tick } from "../support/fake_socket.js";
import { PROTOCOL_VERSION } from "../../src/protocol/generated/constants.js";

const FILES = { open: async () => assert.fail("no files"), save: async () => assert.fail("no files") };
const HELLO = { type: "hello", version: PROTOCOL_VERSION, role: "requestor", name: "t", software: "kiln-js/0.1.0" };
const RESOURCES = { cpus: 1, memory: 256 * 2 ** 20, storage: 0 };
const rented = (re, activity) => ({ type: "rented", re, activity, provider: "p1", cached: true, resources: RESOURCES });
const welcome = (extra) => ({ type: "welcome", version: "1.2", session: "r1", software: "hub", limits: LIMITS, ...extra });

/** A requestor over stand-in sockets: `sockets` holds every one it opened, the newest last. */
async function requestorOverFakes(options = {}, grace = 5) {
  const sockets = [];
  const platform = {
    openSocket: () => {
      const socket = new FakeSocket();
      sockets.push(socket);
      return socket;
    },
    files: FILES,
    images: { open: async () => assert.fail("no images") },
  };
  const opening = connectWith(platform, "ws://hub", { name: "t", ...options });
  sockets[0].open();
  assert.deepEqual(sockets[0].take(), [HELLO]);
  sockets[0].receive(welcome({ resume: "secret-1", grace }));
  return { sockets, requestor: await opening };
}

/** Until the requestor opened its `n`th socket; null if `requestor` stops reconnecting first. */
async function nthSocket(sockets, n, requestor = null) {
  for (let waited = 0; sockets.length < n; waited += 10) {
    if (requestor !== null && !requestor.reconnecting) return null;
    assert.ok(waited < 5_000, `socket ${n} was never opened`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return sockets[n - 1];
}

/** How many timers the process has running. */
const timers = () => process.getActiveResourcesInfo().filter((resource) => resource === "Timeout").length;

/** Rent `id` over `socket`: the rent goes out, the stand-in hub answers. */
async function rent(requestor, socket, id) {
  const renting = requestor.rent({ image: "busybox" });
  await tick();
  const [sent] = socket.take();
  assert.equal(sent.type, "rent");
  socket.receive(rented(sent.id, id));
  return renting;
}

test("a lost connection dials again with hello.resume; what the hub did not keep is lost", { timeout: 10_000 }, async () => {
  const { sockets, requestor } = await requestorOverFakes();
  const kept = await rent(requestor, sockets[0], "a1");
  const dropped = await rent(requestor, sockets[0], "a2");
  const inFlight = kept.run(["sleep", "9"]);
  await tick();
  assert.equal(sockets[0].take()[0].type, "exec");

  sockets[0].drop();
  await assert.rejects(inFlight, ConnectionLostError);
  assert.equal(requestor.reconnecting, true);
  const running = kept.run(["true"]); // waits out the reconnect

  const second = await nthSocket(sockets, 2);
  second.open();
  assert.deepEqual(second.take(), [{ ...HELLO, resume: "secret-1" }]);
  second.receive(welcome({ resume: "secret-2", grace: 5, resumed: ["a1"] }));
  assert.equal(await requestor.reconnected(), true);
  assert.equal(requestor.reconnecting, false);
  assert.equal(requestor.connection.socket, second);
  assert.deepEqual(requestor.activities.map((a) => a.id), ["a1"]);
  assert.ok(dropped.lost instanceof ConnectionLostError && /not kept/.test(dropped.lost.message));
  await assert.rejects(dropped.run(["true"]), ProviderLostError);

  await tick();
  const [exec] = second.take();
  assert.deepEqual([exec.type, exec.activity, exec.argv], ["exec", "a1", ["true"]]);
  second.receive({ type: "exec_result", re: exec.id, exit_code: 0, timed_out: false, duration: 0.1, stdout: "", stderr: "" });
  assert.equal((await running).exitCode, 0);

  // A second drop resumes with the newest secret.
  second.drop();
  const third = await nthSocket(sockets, 3);
  third.open();
  assert.equal(third.take()[0].resume, "secret-2");
  third.receive(welcome({ resume: "secret-3", grace: 5, resumed: ["a1"] }));
  assert.equal(await requestor.reconnected(), true);

  const closing = requestor.close();
  await tick();
  const [release] = third.take();
  assert.deepEqual([release.type, release.activity], ["release", "a1"]);
  third.receive({ type: "done", re: release.id });
  await closing;
  assert.ok(requestor.gone instanceof ConnectionClosedError && !(requestor.gone instanceof ConnectionLostError));
  assert.equal(sockets.length, 3, "a close by the caller is not dialled again");
});

test("no reconnect within the grace period: every activity is lost, every call fails", { timeout: 10_000 }, async () => {
  const { sockets, requestor } = await requestorOverFakes({}, 0.5);
  const act = await rent(requestor, sockets[0], "a1");
  sockets[0].drop();
  await tick();
  for (let n = 2; requestor.reconnecting; n += 1) {
    const refused = await nthSocket(sockets, n, requestor);
    if (refused === null) break;
    refused.emit("error", { message: "connect ECONNREFUSED" });
    refused.drop();
  }
  assert.equal(await requestor.reconnected(), false);
  assert.ok(requestor.gone instanceof ConnectionLostError && /no reconnect within 0.5 s/.test(requestor.gone.message));
  assert.ok(sockets.length >= 3, "dialled more than once, with a backoff");
  assert.deepEqual(requestor.activities, []);
  assert.ok(act.lost instanceof ConnectionLostError);
  await assert.rejects(act.run(["true"]), ConnectionLostError);
  await assert.rejects(requestor.market(), ConnectionLostError);
  await act.release(); // a no-op: it is lost
  await requestor.close();
});

test("reconnect: false, or a hub that holds nothing, leaves a lost connection lost", { timeout: 10_000 }, async () => {
  const { sockets, requestor } = await requestorOverFakes({ reconnect: false });
  sockets[0].drop();
  await tick();
  assert.equal(requestor.reconnecting, false);
  assert.ok(requestor.gone instanceof ConnectionLostError);
  await assert.rejects(requestor.market(), ConnectionLostError);
  assert.equal(sockets.length, 1);
  await requestor.close();
});

test("close() during a reconnect gives it up at once", { timeout: 10_000 }, async () => {
  const { sockets, requestor } = await requestorOverFakes();
  sockets[0].drop();
  await nthSocket(sockets, 2); // dialling, never answered
  const started = Date.now();
  await requestor.close();
  assert.ok(Date.now() - started < 1_000);
  assert.ok(requestor.gone instanceof ConnectionClosedError && !(requestor.gone instanceof ConnectionLostError));
  await assert.rejects(requestor.market(), ConnectionClosedError);
});

test("close() during a dial of a reconnect gives the dial up: its socket closed, no timer left", { timeout: 10_000 }, async () => {
  const { sockets, requestor } = await requestorOverFakes();
  const before = timers();
  sockets[0].drop();
  const dialled = await nthSocket(sockets, 2); // never answered: its hello timeout is the grace, 5 s
  await requestor.close();
  await tick();
  assert.equal(dialled.readyState, 3, "the abandoned dial closed its socket");
  assert.equal(timers(), before, "the abandoned dial's hello timeout is cleared");
});

test("close() between two dials of a reconnect leaves no timer behind", { timeout: 10_000 }, async () => {
  const { sockets, requestor } = await requestorOverFakes();
  const before = timers();
  sockets[0].drop();
  const refused = await nthSocket(sockets, 2);
  refused.emit("error", { message: "connect ECONNREFUSED" });
  refused.drop();
  await tick(); // now waiting out the first backoff
  const started = Date.now();
  await requestor.close();
  await tick();
  assert.ok(Date.now() - started < 100, "close() does not wait out the backoff");
  assert.equal(sockets.length, 2);
  assert.equal(timers(), before, "the backoff's timer is cleared");
});

test("several hubs: their URLs each once, in order; a round starts at the one the client is on", () => {
  const [a, b, c] = ["ws://a.example:7465", "wss://b.example:7465", "ws://10.0.0.3:7465/"];
  assert.deepEqual(hubUrls(a), [a]);
  assert.deepEqual(hubUrls(`${a},${b}, ${c}`), [a, b, c]);
  assert.deepEqual(hubUrls([b, `${a},${c}`, b]), [b, a, c]);
  const refusals = [
    [[], /no hub URL given/],
    [`${a},`, /holds an empty hub URL between its commas/],
    [[a, "127.0.0.1:7465"], /"127.0.0.1:7465" is not a hub URL \(no ws:\/\/ or wss:\/\/ in front\)/],
    [Array.from({ length: MAX_HUB_URLS + 1 }, (_, n) => `ws://h${n}:1`), /a client takes at most 16/],
  ];
  for (const [urls, said] of refusals) assert.throws(() => hubUrls(urls), (e) => e instanceof UsageError && said.test(e.message));
  const ring = new HubRing([a, b, c]);
  assert.deepEqual([ring.current, ring.order()], [a, [a, b, c]], "at first, the first given");
  ring.moved(b);
  assert.deepEqual([ring.current, ring.order()], [b, [b, c, a]]);
  assert.throws(() => ring.moved("ws://elsewhere:7465"), UsageError);
});

test("several hubs: the first that answers is joined; a drop dials that one first, then the others", { timeout: 10_000 }, async () => {
  /** @type {{url: string, socket: FakeSocket}[]} */
  const dials = [];
  const platform = {
    openSocket: (url) => {
      const socket = new FakeSocket();
      dials.push({ url, socket });
      return socket;
    },
    files: FILES,
    images: { open: async () => assert.fail("no images") },
  };
  const dialled = async (n) => {
    for (let waited = 0; dials.length < n; waited += 10) {
      assert.ok(waited < 5_000, `dial ${n} never came`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return dials[n - 1];
  };
  /** @param {FakeSocket} socket */
  const refuse = (socket) => {
    socket.emit("error", { message: "connect ECONNREFUSED" });
    socket.drop();
  };
  const opening = connectWith(platform, "ws://a:1,ws://b:1", { name: "t" });
  refuse((await dialled(1)).socket);
  const b = await dialled(2);
  assert.deepEqual(dials.map((d) => d.url), ["ws://a:1", "ws://b:1"]);
  b.socket.open();
  assert.deepEqual(b.socket.take(), [HELLO]);
  b.socket.receive(welcome({ resume: "secret-1", grace: 5 }));
  const requestor = await opening;
  assert.equal(requestor.url, "ws://b:1");

  b.socket.drop();
  refuse((await dialled(3)).socket);
  const a = await dialled(4);
  assert.deepEqual(dials.slice(2).map((d) => d.url), ["ws://b:1", "ws://a:1"], "the hub it was on first");
  a.socket.open();
  assert.deepEqual(a.socket.take(), [{ ...HELLO, resume: "secret-1" }]);
  a.socket.receive(welcome({ resume: "secret-2", grace: 5 }));
  assert.equal(await requestor.reconnected(), true);
  assert.equal(requestor.url, "ws://a:1");
  assert.equal(dials.length, 4);
  await requestor.close();

  const none = connectWith(platform, ["ws://c:1", "ws://d:1"], { name: "t" });
  refuse((await dialled(5)).socket);
  refuse((await dialled(6)).socket);
  await assert.rejects(none, (e) => e instanceof ConnectionLostError && /^no hub answered: ws:\/\/c:1: the connection to the hub was lost: connect ECONNREFUSED; ws:\/\/d:1: /.test(e.message));
});
