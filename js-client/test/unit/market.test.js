// The market of protocol 1.5 against a stand-in hub: price caps and rent options on the
// wire (only to a hub that welcomed 1.5), refusals as their errors, balance, ledger,
// verdicts, cost news, and the estimate.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  BudgetExceededError,
  InsufficientFundsError,
  KilnError,
  NoMatchError,
  UnsupportedVersionError,
  UsageError,
} from "../../src/node/index.js";
import { Requestor } from "../../src/requestor.js";
import { LIMITS, connected, tick } from "../support/fake_socket.js";

const PLATFORM = { openSocket: () => assert.fail("no socket"), files: {}, images: {} };
const RESOURCES = { cpus: 1, memory: 2 ** 28, storage: 0 };

async function requestor(version = "1.5") {
  const { socket, conn } = await connected(LIMITS, version);
  const r = new Requestor(conn, /** @type {any} */ (PLATFORM));
  conn.onEvent = (event) => r._onEvent(event);
  return { socket, requestor: r };
}

async function sentOne(socket) {
  await tick();
  const sent = socket.take();
  assert.equal(sent.length, 1, JSON.stringify(sent));
  return sent[0];
}

const rented = (re, extra = {}) => ({
  type: "rented", re, activity: "a1", provider: "p1", cached: true, resources: RESOURCES, ...extra,
});

test("a demand's maxPrice goes on the wire in micro-credits, the rent's options in the wire's names", async () => {
  const { socket, requestor: r } = await requestor();
  const renting = r.rent({
    image: "app:1",
    demand: { cpus: 2, maxPrice: { start: 0.01, cpuHour: 0.2, envHour: "0.05" } },
    group: "job-1",
    maxDuration: 600,
    budget: 5,
    strategy: "cheapest",
    allow: ["p2", "p1", "p1"],
    deny: ["p9"],
    exclude: ["p8"],
    minReputation: 0.8,
  });
  const rent = await sentOne(socket);
  assert.deepEqual(rent, {
    type: "rent", id: rent.id, image: "app:1",
    demand: { cpus: 2, memory: 256 * 2 ** 20, storage: 0, labels: {}, max_price: { start: 10_000, cpu_hour: 200_000, env_hour: 50_000 } },
    exclude: ["p8", "p9"], group: "job-1",
    max_duration: 600, budget: 5_000_000, strategy: "cheapest", allow: ["p1", "p2"], min_reputation: 0.8,
  });
  const price = { start: 10_000, cpu_hour: 200_000, env_hour: 50_000 };
  socket.receive(rented(rent.id, { price, hold: 1_000_000 }));
  const activity = await renting;
  assert.deepEqual([activity.price, activity.hold, activity.cost], [price, 1_000_000, null]);
});

test("a rent without the market's options sends none of its fields (an older hub takes it)", async () => {
  const { socket, requestor: r } = await requestor("1.2");
  const renting = r.rent({ image: "app:1", deny: ["p2"] });
  const rent = await sentOne(socket);
  assert.deepEqual(rent, {
    type: "rent", id: rent.id, image: "app:1", demand: { cpus: 1, memory: 256 * 2 ** 20, storage: 0, labels: {} },
    exclude: ["p2"],
  });
  socket.receive(rented(rent.id));
  const activity = await renting;
  assert.deepEqual([activity.price, activity.hold], [null, null]);
});

test("the market's options are refused before anything is sent to a hub below 1.5", async () => {
  const { socket, requestor: r } = await requestor("1.4");
  const options = [
    { demand: { maxPrice: { start: 1 } } }, { maxDuration: 60 }, { group: "g", budget: 1 }, { strategy: "cheapest" },
    { allow: ["p1"] }, { minReputation: 0.5 },
  ];
  for (const extra of options) {
    await assert.rejects(r.rent({ image: "app:1", ...extra }), (e) => e instanceof UnsupportedVersionError && /needs protocol 1\.5/.test(e.message), JSON.stringify(extra));
  }
  await assert.rejects(r.balance(), UnsupportedVersionError);
  await assert.rejects(r.ledger(), UnsupportedVersionError);
  await assert.rejects(r.reportVerdict("a1", ["a2", "a3"]), UnsupportedVersionError);
  await tick();
  assert.deepEqual(socket.take(), []);
});

test("bad market options are the caller's UsageError", async () => {
  const { socket, requestor: r } = await requestor();
  const bad = [
    { budget: 1 }, // no group
    { group: "g", budget: 1e-9 }, { group: "g", budget: -1 }, { maxDuration: 0 }, { maxDuration: 400 * 86400 },
    { strategy: "random" }, { allow: [] }, { allow: "p1" }, { deny: "p1" }, { minReputation: 1.5 }, { demand: { maxPrice: { cpu: 1 } } },
  ];
  for (const extra of bad) await assert.rejects(r.rent({ image: "app:1", ...extra }), UsageError, JSON.stringify(extra));
  await tick();
  assert.deepEqual(socket.take(), []);
});

test("refusals for money are their own errors under KilnError, with their codes", async () => {
  const { socket, requestor: r } = await requestor();
  for (const [code, Class] of [["insufficient_funds", InsufficientFundsError], ["budget_exceeded", BudgetExceededError]]) {
    const renting = r.rent({ image: "app:1", group: "g", budget: 1 });
    const rent = await sentOne(socket);
    socket.receive({ type: "error", re: rent.id, code, message: "no" });
    await assert.rejects(renting, (e) => e instanceof Class && e instanceof KilnError && e.code === code);
  }
});

test("balance and ledger ask the hub and answer in credits, exactly in micro-credits too", async () => {
  const { socket, requestor: r } = await requestor();
  const asking = r.balance();
  const ask = await sentOne(socket);
  assert.deepEqual(ask, { type: "balance", id: ask.id });
  socket.receive({ type: "balance_info", re: ask.id, account: "requestor:3", available: 4_500_000, held: 500_001, spent: 1 });
  assert.deepEqual(await asking, {
    account: "requestor:3", available: 4.5, held: 0.500001, spent: 0.000001,
    micro: { available: 4_500_000, held: 500_001, spent: 1 },
  });

  const listing = r.ledger({ limit: 2 });
  const query = await sentOne(socket);
  assert.deepEqual(query, { type: "ledger", id: query.id, limit: 2 });
  const entries = [{ account: "hold:a1", amount: -250_000 }, { account: "provider:p1", amount: 250_000 }];
  socket.receive({
    type: "ledger_list", re: query.id, matched: 7,
    transactions: [{ id: 9, key: "capture:a1:1", kind: "capture", time: 1700000000.5, activity: "a1", entries }],
  });
  assert.deepEqual(await listing, {
    matched: 7,
    transactions: [{
      id: 9, key: "capture:a1:1", kind: "capture", time: 1700000000.5, activity: "a1",
      entries: [{ account: "hold:a1", amount: -0.25, amountMicro: -250_000 }, { account: "provider:p1", amount: 0.25, amountMicro: 250_000 }],
    }],
  });
  await assert.rejects(r.ledger({ limit: 0 }), UsageError);
});

test("reportVerdict sends the verdict request and resolves on done", async () => {
  const { socket, requestor: r } = await requestor();
  const reporting = r.reportVerdict("a1", ["a2", "a3"]);
  const verdict = await sentOne(socket);
  assert.deepEqual(verdict, { type: "verdict", id: verdict.id, lost: "a1", agreed: ["a2", "a3"] });
  socket.receive({ type: "done", re: verdict.id });
  await reporting;
  await assert.rejects(r.reportVerdict("a1", ["a2"]), UsageError, "a verdict needs two that agree");
});

test("cost news reaches the activity and every listener, also after its release", async () => {
  const { socket, requestor: r } = await requestor();
  const heard = [];
  const stop = r.onCost((cost) => heard.push(cost));
  const renting = r.rent({ image: "app:1" });
  const rent = await sentOne(socket);
  socket.receive(rented(rent.id, { price: { start: 0, cpu_hour: 0, env_hour: 3_600_000 }, hold: 3_600_000 }));
  const activity = await renting;
  socket.receive({ type: "cost", activity: "a1", seq: 1, due: 60_000, seconds: 60, cpu_seconds: 1.5 });
  await tick();
  const first = { activity: "a1", seq: 1, due: 0.06, dueMicro: 60_000, seconds: 60, cpuSeconds: 1.5, final: false };
  assert.deepEqual(activity.cost, first);
  socket.receive({ type: "cost", activity: "a1", seq: 2, due: 61_000, seconds: 61, cpu_seconds: 1.5, final: true });
  await tick();
  assert.deepEqual(heard, [first, { ...first, seq: 2, due: 0.061, dueMicro: 61_000, seconds: 61, final: true }]);
  // Released, the activity still hears its final cost.
  const releasing = activity.release();
  const release = await sentOne(socket);
  socket.receive({ type: "done", re: release.id, cpu_seconds: 1.5 });
  await releasing;
  socket.receive({ type: "cost", activity: "a1", seq: 3, due: 62_000, seconds: 62, cpu_seconds: 1.5, final: true });
  await tick();
  assert.equal(activity.cost.seq, 3);
  assert.equal(heard.length, 3);
  stop();
  socket.receive({ type: "cost", activity: "a9", seq: 1, due: 1, seconds: 1, cpu_seconds: 0 });
  await tick();
  assert.equal(heard.length, 3);
});

test("estimate: the dearest fitting provider's worst case, times the activities, capped by the budget", async () => {
  const { socket, requestor: r } = await requestor();
  const offer = (name, price, cpus = 4) => ({
    name, arch: "x86_64", labels: {}, offered: { cpus, memory: 2 ** 33, storage: 2 ** 34 }, free: { cpus, memory: 2 ** 33, storage: 2 ** 34 },
    images: [], activities: 0, price, reputation: 0.5,
  });
  const providers = [
    offer("cheap", { start: 0, cpu_hour: 0, env_hour: 1_000_000 }),
    offer("dear", { start: 1_000_000, cpu_hour: 2_000_000, env_hour: 0 }),
    offer("capped", { start: 0, cpu_hour: 9_000_000, env_hour: 0 }),
    offer("small", { start: 0, cpu_hour: 9_000_000, env_hour: 0 }, 0.5),
    offer("free", null),
  ];
  const estimate = (options) => r.estimate({ cpus: 1, maxPrice: { start: 1, cpuHour: 2, envHour: 1 } }, options);
  const answer = async (pending) => {
    const ask = await sentOne(socket);
    assert.equal(ask.type, "market");
    socket.receive({ type: "market_info", re: ask.id, providers, matched: providers.length, activities: 0 });
    return pending;
  };
  // dear: 1 credit to start + 2 credits per CPU-hour for 1 CPU during half an hour = 2 credits.
  assert.equal(await answer(estimate({ maxDuration: 1800 })), 2);
  assert.equal(await answer(estimate({ maxDuration: 1800, activities: 3 })), 6);
  assert.equal(await answer(estimate({ maxDuration: 1800, activities: 3, budget: 5 })), 5);
  assert.equal(await answer(estimate({ maxDuration: 1800, deny: ["dear"] })), 0.5, "cheap: 1 credit an hour held");
  assert.equal(await answer(estimate({ maxDuration: 1800, allow: ["free"] })), 0, "a free provider costs nothing");
  await assert.rejects(answer(estimate({ maxDuration: 1800, minReputation: 0.9 })), NoMatchError);
  await assert.rejects(r.estimate({}, /** @type {any} */ ({})), UsageError);
  await assert.rejects(r.estimate({}, { maxDuration: 60, budget: -1 }), UsageError);
});
