// Jobs on real providers: order, reuse, one activity per provider (the hub's group rule),
// retries elsewhere, failures, timeouts, cancellation, and a provider killed with SIGKILL
// mid-job. (test/unit/executor.test.js holds the scheduling rules to an in-memory hub.)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  CancelledError,
  RetryTaskError,
  TaskFailedError,
  TaskTimeoutError,
  UsageError,
  connect,
} from "../../src/node/index.js";
import { IMAGE, containersOf, sleep, startCluster } from "../support/harness.js";

const DEMAND = { cpus: 0.5, memory: "128MiB" };
/** @type {import("../support/harness.js").Cluster} */
let cluster;
let requestor;

before(async () => {
  cluster = await startCluster([
    { name: "ma", cpus: 1, memory: "1GiB" },
    { name: "mb", cpus: 1, memory: "1GiB" },
  ]);
  requestor = await connect(cluster.url, { name: "js-map" });
});
after(async () => {
  await requestor?.close();
  await cluster?.stop();
});

const noContainersLeft = () => [...cluster.providers.keys()].every((p) => containersOf(p).length === 0);

/** A worker that squares its part in a container and notes which activity ran it. */
function squarer(seen) {
  return async (act, n, { signal }) => {
    seen.push({ activity: act.id, provider: act.provider });
    await act.sendJson({ n }, "/golem/input/n.json", { signal });
    const r = await act.run(["sh", "-c", `echo $((${n} * ${n}))`], { signal });
    return Number(r.stdout.trim());
  };
}

test("map gives results in input order, one activity per provider, reused", { timeout: 120_000 }, async () => {
  const seen = [];
  const parts = Array.from({ length: 12 }, (_, i) => i);
  const job = requestor.job(parts, squarer(seen), { image: IMAGE, demand: DEMAND, maxProviders: 4 });
  assert.deepEqual(await job.run(), parts.map((n) => n * n));
  const activities = new Set(seen.map((s) => s.activity));
  const providers = [...new Set(seen.map((s) => s.provider))].sort();
  assert.equal(providers.length, 2, "both providers did work");
  assert.equal(activities.size, 2, "one activity per provider, each reused");
  assert.deepEqual([job.summary.attempts, job.summary.succeeded, job.summary.retries], [12, 12, 0]);
  assert.deepEqual([...job.summary.tasksPerProvider.keys()].sort(), providers);
  assert.deepEqual([...job.summary.cpuSeconds.keys()].sort(), providers);
  assert.equal(requestor.activities.length, 0);
  assert.ok(noContainersLeft());
  assert.deepEqual(await requestor.map([], squarer([]), { image: IMAGE }), []);
});

test("the hub keeps each job's activities on distinct providers while two jobs share them", { timeout: 120_000 }, async () => {
  // Each provider has room for two of these activities: only the group keeps a job to one.
  const slow = async (act, n, { signal }) => Number((await act.run(["sh", "-c", `sleep 0.3; echo ${n}`], { signal })).stdout);
  const parts = Array.from({ length: 8 }, (_, i) => i);
  const jobs = [0, 1].map(() => requestor.job(parts, slow, { image: IMAGE, demand: DEMAND, maxProviders: 4 }));
  const rented = jobs.map((job) => {
    const providers = [];
    job.subscribe((event) => event.kind === "rented" && providers.push(event.provider));
    return providers;
  });
  const results = await Promise.all(jobs.map((job) => job.run()));
  assert.deepEqual(results, [parts, parts]);
  assert.notEqual(jobs[0].group, jobs[1].group);
  const both = [...cluster.providers.keys()].sort();
  assert.deepEqual(rented.map((providers) => providers.sort()), [both, both], "one activity per provider per job");
  assert.ok(noContainersLeft());
});

test("mapUnordered yields each result as its task finishes", { timeout: 60_000 }, async () => {
  const seen = new Map();
  for await (const [index, value] of requestor.mapUnordered([3, 1, 2], squarer([]), { image: IMAGE, demand: DEMAND })) {
    seen.set(index, value);
  }
  assert.deepEqual(seen, new Map([[0, 9], [1, 1], [2, 4]]));
});

test("a worker error ends the map with TaskFailedError, caused by it, after releasing everything", { timeout: 60_000 }, async () => {
  const thrown = new TypeError("bad part");
  const error = await requestor
    .map([1, 2, 3, 4], async (act, n) => {
      if (n === 3) throw thrown;
      await act.run(["sleep", "1"]);
      return n;
    }, { image: IMAGE, demand: DEMAND })
    .catch((e) => e);
  assert.ok(error instanceof TaskFailedError, String(error));
  assert.equal(error.index, 2);
  assert.equal(error.item, 3);
  assert.deepEqual(error.attempts, [thrown]);
  assert.equal(error.cause, thrown);
  assert.match(error.message, /: TypeError: bad part$/);
  assert.equal(error.code, "task_failed");
  assert.equal(requestor.activities.length, 0);
  assert.ok(noContainersLeft());
});

test("a worker that is not a function is refused before anything is rented", { timeout: 30_000 }, async () => {
  const rents = [];
  const watcher = await connect(cluster.url, { name: "js-map-watcher" });
  try {
    for (const bad of [42, "square", { run: squarer([]) }]) {
      await assert.rejects(requestor.map([1, 2], bad, { image: IMAGE, demand: DEMAND }), (e) => e instanceof UsageError && /worker must be a function/.test(e.message));
      const unordered = requestor.mapUnordered([1, 2], bad, { image: IMAGE, demand: DEMAND });
      await assert.rejects(unordered.next(), UsageError);
      assert.throws(() => requestor.job([1, 2], bad, { image: IMAGE }), UsageError);
      rents.push(...(await requestor.listActivities()));
    }
    assert.deepEqual(rents, [], "the hub lists no activity of this requestor");
    assert.ok((await watcher.market()).every((p) => p.activities === 0 && p.free.cpus === p.offered.cpus));
  } finally {
    await watcher.close();
  }
});

test("RetryTaskError runs the task again on the other provider", { timeout: 60_000 }, async () => {
  const attempts = [];
  const results = await requestor.map([7, 8], async (act, n, { attempt }) => {
    if (n === 7) attempts.push(act.provider);
    if (n === 7 && attempt === 1) throw new RetryTaskError("try elsewhere");
    // Part 8 keeps the first activity busy until the second is rented: then the second is
    // "available", and the retry must go there.
    return (await act.run(["sh", "-c", n === 8 ? "sleep 2; echo 8" : `echo ${n}`])).stdout.trim();
  }, { image: IMAGE, demand: DEMAND, maxProviders: 2 });
  assert.deepEqual(results, ["7", "8"]);
  assert.equal(attempts.length, 2);
  assert.notEqual(attempts[0], attempts[1], "the retry went to the other provider");
});

test("a task out of attempts fails with each attempt's error; returnExceptions keeps going", { timeout: 90_000 }, async () => {
  const slow = async (act, n, { signal }) => {
    if (n === 0) await act.run(["sleep", "30"], { signal });
    return n;
  };
  const error = await requestor
    .map([0, 1], slow, { image: IMAGE, demand: DEMAND, retries: 1, taskTimeoutMs: 1500 })
    .catch((e) => e);
  assert.ok(error instanceof TaskFailedError, String(error));
  assert.equal(error.index, 0);
  assert.equal(error.attempts.length, 2);
  assert.ok(error.attempts.every((e) => e instanceof TaskTimeoutError && e.code === "timeout"));

  const kept = await requestor.map([0, 1, 2], slow, {
    image: IMAGE, demand: DEMAND, retries: 0, taskTimeoutMs: 1500, returnExceptions: true,
  });
  assert.ok(kept[0] instanceof TaskFailedError);
  assert.deepEqual(kept.slice(1), [1, 2]);
  assert.ok(noContainersLeft());
});

test("an AbortSignal cancels a whole map and releases what it rented", { timeout: 60_000 }, async () => {
  const controller = new AbortController();
  let started = 0;
  const running = requestor.map(Array.from({ length: 8 }, (_, i) => i), async (act, n, { signal }) => {
    started += 1;
    await act.run(["sleep", "30"], { signal });
    return n;
  }, { image: IMAGE, demand: DEMAND, signal: controller.signal });
  while (started < 2) await sleep(50);
  const abortedAt = Date.now();
  controller.abort();
  await assert.rejects(running, CancelledError);
  assert.ok(Date.now() - abortedAt < 10_000);
  assert.equal(requestor.activities.length, 0);
  assert.ok(noContainersLeft());
});

test("map finishes with right results when a provider is killed mid-job", { timeout: 180_000 }, async () => {
  const victim = await cluster.startProvider("mvictim", { cpus: 1, memory: "1GiB" });
  const seen = [];
  let killed = false;
  const parts = Array.from({ length: 18 }, (_, i) => i + 1);
  const worker = async (act, n, context) => {
    seen.push(act.provider);
    if (act.provider === victim && !killed && seen.filter((p) => p === victim).length === 2) {
      killed = true;
      setTimeout(() => cluster.providers.get(victim).kill("SIGKILL"), 300);
    }
    const r = await act.run(["sh", "-c", `sleep 0.5; echo $((${n} * 3))`], { signal: context.signal });
    return Number(r.stdout.trim());
  };
  const results = await requestor.map(parts, worker, { image: IMAGE, demand: DEMAND, maxProviders: 3, retries: 2 });
  assert.ok(killed, "the victim provider was used and killed");
  assert.deepEqual(results, parts.map((n) => n * 3));
  assert.ok(seen.includes(victim));
  assert.equal(requestor.activities.length, 0);
});
