// Jobs in a priced market, against an in-memory hub: the market's options on every rent, the
// budget stop, cost events and what the summary says was spent, verification with a provider
// that lies (its results never used, a verdict reported for each of its losing runs), and
// the job options exported by both entry points.
import { test } from "node:test";
import assert from "node:assert/strict";

import * as browserEntry from "../../src/browser.js";
import * as nodeEntry from "../../src/node/index.js";
import {
  BudgetExceededError,
  DisputedError,
  NoMatchError,
  ProviderLostError,
  TaskFailedError,
  UsageError,
} from "../../src/errors.js";
import { Job, Redundant, SpotCheck } from "../../src/executor.js";
import { errorFromCode } from "../../src/protocol/errors.js";

const IMAGE = "kiln-busybox:latest";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class FakeActivity {
  constructor(hub, provider, group) {
    this.hub = hub;
    this.id = `a${hub.rented.length + 1}`;
    this.provider = provider;
    this.group = group;
    this.lost = null;
    this.released = false;
    this.cpuSeconds = null;
    this.cost = null;
  }

  async release() {
    if (this.released) return;
    await sleep(1);
    this.released = true;
    this.hub.charge(this, true);
  }
}

/**
 * A hub with a ledger, in memory: each activity costs `price` micro-credits per task it ran
 * (plus nothing to start), reported as `cost` news; a group's `budget` (the first rent's)
 * refuses a rent whose hold (`hold` micro-credits) what is left cannot cover.
 */
class PricedHub {
  constructor(names, { hold = 1_000_000, price = 100_000 } = {}) {
    this.names = names;
    this.hold = hold;
    this.price = price;
    this.rented = [];
    this.rents = [];
    this.verdicts = [];
    this.listeners = new Set();
    /** @type {Map<string, number>} group -> budget in micro-credits */
    this.budgets = new Map();
    /** @type {Map<FakeActivity, number>} what each activity owes */
    this.due = new Map();
  }

  live() {
    return this.rented.filter((act) => !act.released && act.lost === null);
  }

  committed(group) {
    // Holds of live activities, plus what ended ones were charged.
    return this.rented.filter((a) => a.group === group).reduce((sum, a) => sum + (a.released ? this.due.get(a) ?? 0 : this.hold), 0);
  }

  async rent(options) {
    this.rents.push(options);
    await sleep(1);
    const { group, exclude = [] } = options;
    if (options.budget != null && !this.budgets.has(group)) this.budgets.set(group, Math.round(options.budget * 1e6));
    const budget = this.budgets.get(group);
    if (budget !== undefined && budget - this.committed(group) < this.hold) {
      throw new BudgetExceededError("the group's budget cannot hold another activity");
    }
    const taken = new Set(this.live().filter((a) => a.group === group).map((a) => a.provider));
    const name = this.names.find((n) => !taken.has(n) && ![...exclude].includes(n));
    if (name === undefined) throw new NoMatchError("no provider can take the demand: every able provider is busy");
    const act = new FakeActivity(this, name, group);
    this.rented.push(act);
    return act;
  }

  onCost(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async reportVerdict(lost, agreed) {
    await sleep(1);
    this.verdicts.push([lost, agreed]);
  }

  /** A task ran on `act`: the hub captures its cost; past its hold, in a group with a budget, the hub ends it. */
  ran(act) {
    if (this.budgets.has(act.group) && (this.due.get(act) ?? 0) + this.price > this.hold) {
      throw new ProviderLostError(`activity ${act.id} is gone: its hold ran out and the budget is spent`, { code: "budget_exceeded" });
    }
    this.due.set(act, (this.due.get(act) ?? 0) + this.price);
    this.charge(act, false);
  }

  charge(act, final) {
    const due = this.due.get(act) ?? 0;
    const seq = (act.seq = (act.seq ?? 0) + 1);
    const cost = { activity: act.id, seq, due: due / 1e6, dueMicro: due, seconds: seq, cpuSeconds: 0, final };
    act.cost = cost;
    for (const listener of [...this.listeners]) listener(cost);
  }
}

function job(hub, parts, worker, options = {}) {
  const events = [];
  const made = new Job(hub, worker, parts, { image: IMAGE, onEvent: (e) => events.push(e), ...options });
  return { job: made, events };
}

const kinds = (events, kind) => events.filter((e) => e.kind === kind);

test("every rent of a job carries its market options, the deny list merged into exclude", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2"]);
  const worker = async (act, n) => {
    hub.ran(act);
    return n;
  };
  const options = { budget: 5, strategy: "cheapest", allow: ["p1", "p2"], deny: ["p9"], minReputation: 0.5, maxDuration: 600 };
  const { job: j } = job(hub, [1, 2, 3], worker, { ...options, maxProviders: 2 });
  assert.deepEqual(await j.run(), [1, 2, 3]);
  assert.ok(hub.rents.length >= 1);
  for (const rent of hub.rents) {
    assert.equal(rent.group, j.group);
    for (const [key, value] of Object.entries(options)) assert.deepEqual(rent[key], value, key);
  }
});

test("bad market or verify options are refused before anything is rented", () => {
  const hub = new PricedHub(["p1"]);
  const worker = async () => 1;
  for (const bad of [{ budget: -1 }, { budget: 1e-9 }, { strategy: "random" }, { minReputation: 2 }, { maxDuration: 0 }, { deny: "p1" }, { verify: 2 }, { verify: { n: 2 } }]) {
    assert.throws(() => new Job(hub, worker, [1], { image: IMAGE, ...bad }), UsageError, JSON.stringify(bad));
  }
  // As Python's Job: n copies of each task need n slots.
  assert.throws(() => new Job(hub, worker, [1], { image: IMAGE, verify: new Redundant(3), maxProviders: 2 }), /maxProviders of 3/);
  assert.throws(() => new Redundant(1), UsageError);
  assert.throws(() => new Redundant(9), UsageError);
  assert.throws(() => new SpotCheck(1.5), UsageError);
  assert.deepEqual(hub.rents, []);
});

test("cost events follow the hub's captures; the summary adds up what each provider was paid", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2"], { price: 250_000 });
  const worker = async (act, n) => {
    await sleep(2);
    hub.ran(act);
    return n;
  };
  const { job: j, events } = job(hub, [1, 2, 3, 4], worker, { maxProviders: 2 });
  await j.run();
  const costs = kinds(events, "cost");
  assert.ok(costs.length >= 4);
  assert.ok(costs.every((e) => e.cost.activity.startsWith("a") && typeof e.provider === "string"));
  assert.match(costs[0].detail, /^a\d: 0\.25 credits so far$/);
  assert.ok(costs.some((e) => / credits in all$/.test(e.detail)), "the final capture at each release");
  assert.equal(j.summary.spent, 1, "4 tasks at 0.25 credits");
  const byProvider = j.summary.spentByProvider;
  assert.equal([...byProvider.values()].reduce((a, b) => a + b, 0), 1);
  assert.deepEqual([...byProvider.keys()], [...byProvider.keys()].sort());
  assert.match(j.summary.lines().join("\n"), /spent 1 credits/);
});

test("a spent budget stops renting: the activities held work on until the hub ends them, then the rest fails with BudgetExceeded", { timeout: 10_000 }, async () => {
  // Two activities' holds fit the budget; a third cannot be held: the job never gets it. Each
  // hold covers one task: the hub ends an activity at its second, and the job cannot rent again.
  const hub = new PricedHub(["p1", "p2", "p3"], { hold: 1_000_000, price: 1_000_000 });
  let started = 0;
  const worker = async (act, n) => {
    started += 1;
    await sleep(5);
    hub.ran(act);
    if (n < 2) throw new (await import("../../src/errors.js")).RetryTaskError("once more, elsewhere");
    return n;
  };
  const { job: j, events } = job(hub, [0, 1, 2, 3, 4, 5], worker, { budget: 2, maxProviders: 3, retries: 5 });
  await assert.rejects(j.run(), (e) => e instanceof BudgetExceededError && e.code === "budget_exceeded" && /the job stopped: task \d failed/.test(e.message));
  assert.ok(started >= 2);
  assert.ok(hub.rents.some((r) => r.budget === 2));
  assert.deepEqual(hub.live(), [], "every activity released");
  assert.ok(kinds(events, "task_failed").every((e) => /the job's budget is spent/.test(e.detail)));
  assert.ok(j.summary.spent <= 2, "never more than the budget");
});

test("with returnExceptions, each task the budget did not cover is a TaskFailedError caused by BudgetExceeded", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2"], { hold: 1_000_000, price: 1_000_000 });
  const worker = async (act, n) => {
    await sleep(2);
    hub.ran(act);
    return n;
  };
  // One hold fits: one activity runs tasks until its charges use the budget up, then the next rent is refused.
  const { job: j } = job(hub, [0, 1, 2, 3], worker, { budget: 1.5, maxProviders: 2, returnExceptions: true });
  const results = await j.run();
  const failed = results.filter((r) => r instanceof TaskFailedError);
  assert.ok(failed.length >= 1, JSON.stringify(results));
  for (const failure of failed) {
    assert.ok(failure.cause instanceof BudgetExceededError);
    assert.match(failure.message, /the job's budget is spent/);
  }
  assert.deepEqual(results.filter((r) => !(r instanceof TaskFailedError)), results.slice(0, results.length - failed.length));
});

test("an activity the hub ends for the budget stops the job as a refused rent does", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2"]);
  let calls = 0;
  const worker = async (act, n) => {
    calls += 1;
    await sleep(2);
    if (calls === 2) {
      hub.budgets.set(act.group, 0); // the hub's view: nothing is left
      throw new ProviderLostError(`activity ${act.id} is gone: the budget ran out`, { code: "budget_exceeded" });
    }
    return n;
  };
  const { job: j } = job(hub, [0, 1, 2, 3], worker, { budget: 10, maxProviders: 1, retries: 0 });
  await assert.rejects(j.run(), (e) => e instanceof BudgetExceededError && e.cause instanceof BudgetExceededError);
  assert.deepEqual(hub.live(), []);
  assert.equal(j.summary.succeeded, 1);
  assert.deepEqual([...j.summary.failedProviders], [], "not the provider's fault");
});

// The hub ends an activity under a command: activity_lost first, then the command fails
// `cancelled` (the provider halts it as it destroys the container). It counts as that end.
const cut = (act, code, why) => {
  act.lost = errorFromCode(code, why);
  return errorFromCode("cancelled", "exec cancelled");
};

test("a command cut when the hub ends its activity for the budget stops the job with BudgetExceeded", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2"]);
  let calls = 0;
  const worker = async (act, n) => {
    calls += 1;
    await sleep(2);
    if (calls === 2) {
      hub.budgets.set(act.group, 0); // the hub's view: nothing is left
      throw cut(act, "budget_exceeded", `activity ${act.id} ended: the job's budget is spent`);
    }
    return n;
  };
  const { job: j } = job(hub, [0, 1, 2, 3], worker, { budget: 10, maxProviders: 1, retries: 0 });
  await assert.rejects(j.run(), (e) => e instanceof BudgetExceededError);
  assert.deepEqual(hub.live(), []);
  assert.equal(j.summary.succeeded, 1);
  assert.deepEqual([...j.summary.failedProviders], [], "not the provider's fault");
});

test("a command cut at the rent's maxDuration is tried again as a timeout", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2"]);
  let cuts = 0;
  const worker = async (act, n) => {
    await sleep(1);
    if (n === 0 && cuts === 0) {
      cuts += 1;
      throw cut(act, "expired", `activity ${act.id} reached the max_duration of its rent`);
    }
    return n;
  };
  const { job: j } = job(hub, [0, 1, 2, 3], worker, { maxDuration: 60, maxProviders: 2 });
  assert.deepEqual(await j.run(), [0, 1, 2, 3]);
  assert.equal(j.summary.retries, 1);
});

test("results that never agree fail the task as disputed: a TaskFailedError caused by a DisputedError", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2", "p3"]);
  const worker = async (act) => {
    await sleep(1);
    return act.provider;
  };
  const { job: j } = job(hub, [0], worker, { verify: new Redundant(2), maxProviders: 3, returnExceptions: true });
  const [result] = await j.run();
  assert.ok(result instanceof TaskFailedError);
  assert.ok(result.cause instanceof DisputedError);
  assert.equal(result.cause.code, "task_failed");
  assert.match(result.message, /\(disputed\): 3 results on distinct providers, and no 2 agree/);
  assert.deepEqual(hub.verdicts, []);
});

test("Redundant(2) catches a liar: its results are never used and each losing run is reported to the hub", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["liar", "p1", "p2"]);
  const worker = async (act, n) => {
    await sleep(act.provider === "liar" ? 1 : 3);
    return act.provider === "liar" ? -1 : n * n;
  };
  const { job: j, events } = job(hub, [1, 2, 3], worker, { verify: new Redundant(2), maxProviders: 3 });
  assert.deepEqual(await j.run(), [1, 4, 9]);
  const s = j.summary;
  assert.equal(s.verified, 3);
  const lost = s.lostBy.get("liar") ?? 0;
  assert.ok(lost >= 1, s.lines().join("\n"));
  assert.equal(hub.verdicts.length, lost, "one verdict per losing run");
  const liarActivities = new Set(hub.rented.filter((a) => a.provider === "liar").map((a) => a.id));
  for (const [loser, agreed] of hub.verdicts) {
    assert.ok(liarActivities.has(loser));
    assert.equal(agreed.length, 2);
    assert.ok(agreed.every((a) => !liarActivities.has(a)));
  }
  assert.equal(kinds(events, "task_disputed").length, lost);
  assert.ok(kinds(events, "task_disputed").every((e) => e.provider === "liar"));
  assert.match(s.lines().join("\n"), /verified 3, disputed \d; runs lost: liar \d/);
});

test("SpotCheck(1) checks every task on a second provider; honest ones agree and nothing is reported", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2", "p3"]);
  const worker = async (_act, n) => {
    await sleep(1);
    return { n };
  };
  const { job: j } = job(hub, [1, 2], worker, { verify: new SpotCheck(1), maxProviders: 3 });
  assert.deepEqual(await j.run(), [{ n: 1 }, { n: 2 }], "results compared by content");
  assert.equal(j.summary.verified, 2);
  assert.equal(j.summary.disputed, 0);
  assert.deepEqual(hub.verdicts, []);
});

test("a job holding fewer slots than a tie-break needs gives a provider up and rents another", { timeout: 10_000 }, async () => {
  const hub = new PricedHub(["p1", "p2", "p3"]);
  const worker = async (act) => {
    await sleep(1);
    return act.provider === "p2" ? "wrong" : "right";
  };
  const { job: j } = job(hub, [0], worker, { verify: new Redundant(2), maxProviders: 2 });
  assert.deepEqual(await j.run(), ["right"]);
  assert.deepEqual(hub.rented.map((a) => a.provider).sort(), ["p1", "p2", "p3"]);
  assert.equal(hub.verdicts.length, 1);
});

test("both entry points export the verification strategies and the money helpers", () => {
  for (const entry of [nodeEntry, browserEntry]) {
    assert.equal(entry.Redundant, Redundant);
    assert.equal(entry.SpotCheck, SpotCheck);
    for (const name of ["toMicro", "formatCredits", "due", "worstCase", "InsufficientFundsError", "BudgetExceededError"]) {
      assert.equal(typeof entry[name], "function", name);
    }
  }
});

test("the summary's verification and spending lines read as Python's JobSummary.lines()", async () => {
  const { JobSummary } = await import("../../src/scheduling.js");
  const s = new JobSummary(3);
  Object.assign(s, { succeeded: 2, failed: 1, attempts: 6, wallSeconds: 1.5, verified: 2, disputed: 1 });
  s.tasksPerProvider.set("p1", 2);
  s.cpuSeconds.set("p1", 0.5);
  s.lostBy.set("liar", 1);
  s.spentMicro.set("p1", 1_250_000);
  s.spentMicro.set("liar", 250_000);
  s.failedProviders = new Set(["liar"]);
  // What python/kiln/requestor/scheduling.py prints for the same numbers.
  assert.deepEqual(s.lines(), [
    "tasks 3: 2 done, 1 failed; attempts 6, retries 0; wall time 1.50 s",
    "verified 2, disputed 1; runs lost: liar 1",
    "spent 1.5 credits",
    "  liar: 0 tasks, 0.00 container CPU-seconds, 0.25 credits, lost 1 verification  (failed)",
    "  p1: 2 tasks, 0.50 container CPU-seconds, 1.25 credits",
  ]);
  assert.equal(s.spent, 1.5);
  assert.deepEqual([...s.spentByProvider], [["liar", 0.25], ["p1", 1.25]]);
  s.spentMicro.set("p1", 1_234_250_001); // exactly, as Python's lines() say it
  assert.ok(s.lines().includes("spent 1234.500001 credits"));
  assert.ok(s.lines().includes("  p1: 2 tasks, 0.50 container CPU-seconds, 1234.250001 credits"));
});
