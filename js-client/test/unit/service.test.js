// The replica state machine of a service (src/service.js Replica), as Python's tests/unit/test_service.py.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Http, Tcp, UsageError } from "../../src/node/index.js";
import { MAX_RESTARTS, START_ATTEMPTS, Replica, statusOk } from "../../src/service.js";

const CLOCK = /** @type {[number, number]} */ ([100_000, 1_700_000_000_000]);

/** @param {Partial<{restart: any, retries: number, startTimeoutMs: number}>} [options] */
function replica(options = {}) {
  return new Replica(1, { restart: "on-failure", retries: 3, startTimeoutMs: 10_000, clock: CLOCK, ...options });
}

/** @param {Replica} m */
function healthy(m, now = 101_000) {
  m.started("a1", "p1", now);
  assert.equal(m.checked(true, "", now + 500)[0], "keep");
  assert.equal(m.state, "healthy");
}

test("a replica is healthy after its first passing check", () => {
  const m = replica();
  const [start] = m.started("a1", "p1", 101_000);
  assert.deepEqual([start.kind, start.replica, start.activity, start.provider], ["start", 1, "a1", "p1"]);
  assert.equal(start.time, CLOCK[1] + 1000);
  assert.deepEqual(m.checked(false, "refused", 102_000), ["keep", []]);
  const [action, [event]] = m.checked(true, "", 103_000);
  assert.deepEqual([action, event.kind, m.state], ["keep", "healthy", "healthy"]);
});

test("not healthy within the start timeout: replaced, its provider excluded next", () => {
  const m = replica();
  m.started("a1", "p1", 100_000);
  assert.equal(m.checked(false, "refused", 109_999)[0], "keep");
  const [action, events] = m.checked(false, "refused", 110_000);
  assert.equal(action, "replace");
  assert.deepEqual(events.map((e) => e.kind), ["replace"]);
  assert.match(events[0].reason, /not healthy 10 s after its start: refused/);
  assert.deepEqual([m.state, m.left, m.activity], ["renting", "p1", null]);
});

test("failed checks in a row replace a healthy replica; a pass resets them", () => {
  const m = replica();
  healthy(m);
  m.checked(false, "HTTP 500", 105_000);
  m.checked(false, "HTTP 500", 106_000);
  assert.deepEqual(m.checked(true, "", 107_000), ["keep", []]);
  m.checked(false, "HTTP 500", 108_000);
  m.checked(false, "HTTP 500", 109_000);
  const [action, events] = m.checked(false, "HTTP 500", 110_000);
  assert.equal(action, "replace");
  assert.deepEqual(events.map((e) => e.kind), ["failure", "replace"]);
  assert.equal(events[0].reason, "health check failed (3/3): HTTP 500");
});

test("a lost provider replaces the replica", () => {
  const m = replica();
  healthy(m);
  const [action, events] = m.lost("provider p1 lost", 110_000);
  assert.equal(action, "replace");
  assert.deepEqual(events.map((e) => [e.kind, e.provider]), [["failure", "p1"], ["replace", "p1"]]);
  assert.equal(m.left, "p1");
});

test("a command that ends is restarted in place or stopped by the policy", () => {
  for (const [restart, code, expected] of /** @type {const} */ ([
    ["on-failure", 1, "restart"],
    ["on-failure", null, "restart"],
    ["on-failure", 0, "stop"],
    ["always", 0, "restart"],
    ["no", 1, "stop"],
  ])) {
    const m = replica({ restart });
    healthy(m);
    const [action, events] = m.exited(code, "oops", 110_000);
    assert.equal(action, expected, `${restart} ${code}`);
    assert.deepEqual(events.map((e) => e.kind), [expected === "stop" ? "stop" : "failure"]);
  }
  const m = replica({ restart: "always" });
  healthy(m);
  for (let n = 0; n < MAX_RESTARTS; n++) {
    assert.equal(m.exited(1, "", 110_000 + n)[0], "restart");
    m.started("a1", "p1", 110_500 + n);
  }
  assert.equal(m.exited(1, "", 120_000)[0], "replace");
});

test("a command the requestor's lost connection ended restarts in place, not counted", () => {
  const m = replica({ restart: "no", retries: 2 });
  healthy(m);
  m.checked(false, "HTTP 500", 104_000);
  for (let n = 0; n < MAX_RESTARTS + 2; n++) { // however often: neither the restart limit nor the policy applies
    const [action, [event]] = m.interrupted("the connection dropped", 105_000 + n * 1000);
    assert.deepEqual([action, event.kind, event.activity, event.provider], ["restart", "failure", "a1", "p1"]);
    assert.equal(event.reason, "interrupted, restarted in place: the connection dropped");
    const [start] = m.started("a1", "p1", 105_500 + n * 1000, event.reason);
    assert.deepEqual([start.kind, start.reason], ["start", event.reason]);
  }
  assert.deepEqual([m.restarts, m.exits, m.replacements, m.failures], [MAX_RESTARTS + 2, 0, 0, 0]);
  assert.equal(m.checked(true, "", 120_000)[1][0].kind, "healthy");
  m.stop("the service stopped", 121_000);
  assert.deepEqual(m.interrupted("the connection dropped", 122_000), ["keep", []]);
});

test("a replica never healthy gives up; stop is for good", () => {
  const m = replica();
  for (let n = 0; n < START_ATTEMPTS; n++) {
    assert.equal(m.givenUp, false);
    m.started(`a${n}`, `p${n}`, 100_000 + 20_000 * n);
    m.checked(false, "refused", 115_000 + 20_000 * n);
  }
  assert.equal(m.givenUp, true);
  const s = replica();
  healthy(s);
  assert.equal(s.stop("the service stopped", 120_000)[0].kind, "stop");
  assert.deepEqual(s.stop("again", 121_000), []);
  assert.deepEqual(s.lost("gone", 122_000), ["keep", []]);
});

test("health checks are checked, and status lines read", () => {
  assert.equal(Http(8080, "/health").path, "/health");
  assert.equal(Tcp(1).kind, "tcp");
  for (const bad of [() => Tcp(0), () => Tcp(70_000), () => Http(80, "health"), () => Http(80, "/a b"), () => Http(80, "/x\r\nHost: y")]) {
    assert.throws(bad, UsageError);
  }
  assert.deepEqual(statusOk("HTTP/1.0 200 OK"), [true, ""]);
  assert.deepEqual(statusOk("HTTP/1.1 302 Found"), [true, ""]);
  assert.deepEqual(statusOk("HTTP/1.1 404 Not Found"), [false, "HTTP 404"]);
  assert.equal(statusOk("SSH-2.0-x")[0], false);
  assert.equal(statusOk("HTTP/1.1 2000 OK")[0], false);
});
