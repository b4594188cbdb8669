// The executor's scheduling, against an in-memory hub: a fake `rent` that honours `group`
// and `exclude` over a set of fake providers, and fake activities. Retries, bans, deferred
// blame, distinct providers, joins, cancellation and the summary, without Docker.
// (test/integration/map.test.js runs jobs on a real hub and real providers.)
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  CancelledError,
  ConnectionLostError,
  ImageNotFoundError,
  NoMatchError,
  ProviderLostError,
  RetryTaskError,
  TaskFailedError,
  TaskTimeoutError,
  UsageError,
} from "../../src/errors.js";
import { EVENT_BUFFER, Job, JobSummary } from "../../src/executor.js";

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
  }

  async release() {
    if (this.released) return;
    await sleep(1);
    this.released = true;
    this.cpuSeconds = 0.25;
  }
}

/** The hub's market, in memory: providers by name, and every activity it ever rented. */
class FakeHub {
  constructor(names, { lacking = [] } = {}) {
    this.providers = new Map();
    for (const name of names) this.join(name, { image: !lacking.includes(name) });
    /** @type {FakeActivity[]} */
    this.rented = [];
    /** every rent's exclude and group, in order */
    this.rents = [];
  }

  join(name, { image = true } = {}) {
    this.providers.set(name, { name, image, up: true });
  }

  /** The provider vanishes: its activities are lost. */
  lose(name) {
    this.providers.get(name).up = false;
    for (const act of this.live()) {
      if (act.provider === name) act.lost = new ProviderLostError(`provider '${name}' disconnected`);
    }
  }

  live() {
    return this.rented.filter((act) => !act.released && act.lost === null);
  }

  async rent({ image, exclude = [], group }) {
    assert.equal(image, IMAGE);
    this.rents.push({ exclude: [...exclude].sort(), group });
    await sleep(1);
    const excluded = new Set(exclude);
    // The group rule: never a provider where a live activity of the same group runs.
    const taken = new Set(this.live().filter((act) => group != null && act.group === group).map((act) => act.provider));
    const able = [...this.providers.values()].filter((p) => p.up && !excluded.has(p.name) && !taken.has(p.name));
    if (able.length === 0) throw new NoMatchError("no provider can take the demand: every able provider is busy");
    const provider = able[0];
    if (!provider.image) throw new ImageNotFoundError(`${provider.name} does not hold ${image}`, { provider: provider.name });
    const act = new FakeActivity(this, provider.name, group);
    this.rented.push(act);
    return act;
  }
}

/** A job over `parts` on `hub`, its events collected. */
function job(hub, parts, worker, options = {}) {
  const events = [];
  const made = new Job(hub, parts, worker, { image: IMAGE, onEvent: (e) => events.push(e), ...options });
  return { job: made, events };
}

const kinds = (events, kind) => events.filter((e) => e.kind === kind);
const square = async (act, n) => {
  await sleep(2);
  return n * n;
};

test("results in input order, one activity per provider, reused; every rent names the job's group", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2", "p3"]);
  const { job: j, events } = job(hub, Array.from({ length: 12 }, (_, i) => i), square, { maxProviders: 4 });
  assert.match(j.group, /^job-[0-9a-f]{16}$/);
  assert.deepEqual(await j.run(), Array.from({ length: 12 }, (_, i) => i * i));
  assert.deepEqual(kinds(events, "rented").map((e) => e.provider).sort(), ["p1", "p2", "p3"]);
  assert.equal(hub.rented.length, 3, "the fourth slot never got a provider of its own");
  assert.ok(hub.rents.every((r) => r.group === j.group && r.exclude.length === 0));
  assert.deepEqual(hub.live(), [], "every activity released");
  const s = j.summary;
  assert.deepEqual([s.tasks, s.succeeded, s.failed, s.attempts, s.retries], [12, 12, 0, 12, 0]);
  assert.equal([...s.tasksPerProvider.values()].reduce((a, b) => a + b), 12);
  assert.deepEqual(Object.fromEntries(s.cpuSeconds), { p1: 0.25, p2: 0.25, p3: 0.25 });
  assert.equal(events[0].kind, "job_started");
  assert.equal(events.at(-1).kind, "job_done");
  assert.equal(events.at(-1).detail, s.lines().join("\n"));
  assert.deepEqual(events.map((e) => e.elapsed), events.map((e) => e.elapsed).sort((a, b) => a - b));
  assert.ok(Object.isFrozen(events[0]));
});

test("a provider loading the job's image from the hub's store: image_loading events name it and how far", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1"]);
  const rent = hub.rent.bind(hub);
  hub.rent = async (options) => {
    for (const done of [50, 100]) options.onProgress({ provider: "p1", image: IMAGE, done, total: 100 });
    return rent(options);
  };
  const { job: j, events } = job(hub, [1, 2], square, { maxProviders: 1 });
  await j.run();
  const loading = kinds(events, "image_loading");
  assert.deepEqual(loading.map((e) => [e.provider, e.detail]), [["p1", "50 of 100 bytes"], ["p1", "100 of 100 bytes"]]);
  assert.ok(events.indexOf(loading[1]) < events.indexOf(kinds(events, "rented")[0]));
});

test("a job's user reaches every rent it makes; without it, no user is asked for", { timeout: 10_000 }, async () => {
  for (const [options, expected] of [[{ user: "root" }, ["root", "root"]], [{}, [false, false]]]) {
    const hub = new FakeHub(["p1", "p2"]);
    const users = [];
    const rent = hub.rent.bind(hub);
    hub.rent = async (rentOptions) => {
      users.push("user" in rentOptions ? rentOptions.user : false);
      return rent(rentOptions);
    };
    await job(hub, [1, 2, 3, 4], square, { maxProviders: 2, ...options }).job.run();
    assert.deepEqual(users, expected);
  }
});

test("events() follows the job until job_done; a Job runs once", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1"]);
  const { job: j, events } = job(hub, [1, 2, 3], square);
  const followed = (async () => {
    const seen = [];
    for await (const event of j.events()) seen.push(event);
    return seen;
  })();
  await j.run();
  assert.deepEqual(await followed, events);
  await assert.rejects(j.run(), UsageError);
});

test("a consumer of events() more than EVENT_BUFFER behind loses the oldest", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1"]);
  const { job: j, events } = job(hub, Array.from({ length: 600 }, (_, i) => i), async (act, n) => n);
  const stream = j.events();
  await j.run();
  assert.ok(events.length > EVENT_BUFFER);
  const seen = [];
  for await (const event of stream) seen.push(event);
  assert.deepEqual(seen, events.slice(-EVENT_BUFFER));
});

test("RetryTaskError is the task's failure until the task succeeds elsewhere: then two strikes ban the provider", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["bad", "good"]);
  const tried = { bad: 0, good: 0 };
  const picky = async (act, n) => {
    tried[act.provider] += 1;
    await sleep(5);
    if (act.provider === "bad") throw new RetryTaskError(`${act.provider} gives wrong answers`);
    return n * n;
  };
  const { job: j, events } = job(hub, Array.from({ length: 10 }, (_, i) => i), picky, { retries: 2 });
  assert.deepEqual(await j.run(), Array.from({ length: 10 }, (_, i) => i * i));
  const [ban] = kinds(events, "provider_banned");
  assert.deepEqual([ban.provider, ban.detail], ["bad", "failed 2 times"]);
  // The blame came with a success elsewhere: the ban, then that task done on the good provider.
  const after = events[events.indexOf(ban) + 1];
  assert.deepEqual([after.kind, after.provider], ["task_done", "good"]);
  assert.ok(events.some((e) => e.kind === "task_retry" && e.task === after.task && e.provider === "bad"));
  assert.deepEqual([...j.summary.failedProviders], ["bad"]);
  assert.deepEqual(Object.fromEntries(j.summary.tasksPerProvider), { good: 10 });
  assert.equal(j.summary.retries, tried.bad);
  assert.ok(tried.bad >= 2 && tried.bad < 6, `banned once two of its tasks had succeeded elsewhere (${tried.bad} tries)`);
  // After the ban every rent passes the banned provider over.
  const banIndex = events.indexOf(ban);
  assert.ok(kinds(events.slice(banIndex), "rented").every((e) => e.provider !== "bad"));
  assert.ok(hub.rents.at(-1).exclude.includes("bad"));
});

test("a task failing everywhere ends in TaskFailedError with 3 attempts: no ban, no NoMatch", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2"]);
  const hopeless = async (act, n) => {
    await sleep(2);
    throw new RetryTaskError(`task ${n} cannot be done on ${act.provider}`);
  };
  const { job: j, events } = job(hub, [0, 1], hopeless, { retries: 2, startTimeoutMs: 50 });
  const error = await j.run().catch((e) => e);
  assert.ok(error instanceof TaskFailedError, String(error));
  assert.equal(error.attempts.length, 3);
  assert.ok(error.attempts.every((e) => e instanceof RetryTaskError));
  assert.ok(error.cause instanceof RetryTaskError);
  assert.deepEqual(kinds(events, "provider_banned"), []);
  assert.deepEqual([...j.summary.failedProviders], []);
  assert.deepEqual(hub.live(), []);
});

test("a lost provider is the provider's failure: its task runs again elsewhere and its activity is given up", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["victim", "p2", "p3"]);
  let done = 0;
  const worker = async (act, n) => {
    await sleep(3);
    if (act.provider === "victim" && ++done === 3) hub.lose("victim");
    if (act.lost !== null) throw act.lost;
    return n * 3;
  };
  const { job: j, events } = job(hub, Array.from({ length: 18 }, (_, i) => i), worker, { maxProviders: 3 });
  assert.deepEqual(await j.run(), Array.from({ length: 18 }, (_, i) => i * 3));
  const [retry] = kinds(events, "task_retry");
  assert.equal(retry.provider, "victim");
  assert.match(retry.detail, /^ProviderLostError: /);
  assert.equal(j.summary.tasksPerProvider.get("victim"), 2);
  assert.equal(j.summary.retries, 1);
  assert.ok(events.some((e) => e.kind === "released" && e.provider === "victim"));
  assert.deepEqual(hub.live(), []);
});

test("a provider that cannot start the job's containers is banned at once", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["empty", "p2"], { lacking: ["empty"] });
  const { job: j, events } = job(hub, [1, 2, 3], square, { maxProviders: 1 });
  assert.deepEqual(await j.run(), [1, 4, 9]);
  const [ban] = kinds(events, "provider_banned");
  assert.equal(ban.provider, "empty");
  assert.match(ban.detail, /does not hold/);
  assert.deepEqual(hub.rents.map((r) => r.exclude), [[], ["empty"]]);
});

test("any other worker error fails the task at once, as itself; returnExceptions keeps going", { timeout: 10_000 }, async () => {
  const thrown = new RangeError("two is not allowed");
  const picky = async (act, n) => {
    if (n === 2) throw thrown;
    return square(act, n);
  };
  const hub = new FakeHub(["p1"]);
  const error = await job(hub, [0, 1, 2, 3, 4], picky).job.run().catch((e) => e);
  assert.ok(error instanceof TaskFailedError, String(error));
  assert.deepEqual([error.index, error.item, error.attempts.length], [2, 2, 1]);
  assert.match(error.message, /^task 2 failed after 1 attempt: RangeError: two is not allowed$/);
  assert.equal(error.cause, thrown, "the worker's own error, as thrown");
  assert.equal(error.code, "task_failed");
  assert.deepEqual(hub.live(), []);

  const { job: kept } = job(new FakeHub(["p1"]), [0, 1, 2, 3, 4], picky, { returnExceptions: true });
  const results = await kept.run();
  assert.deepEqual(results.filter((_, i) => i !== 2), [0, 1, 9, 16]);
  assert.ok(results[2] instanceof TaskFailedError);
  assert.deepEqual([kept.summary.succeeded, kept.summary.failed], [4, 1]);
});

test("a timed-out attempt's signal fires; it runs again, on a fresh activity if the worker did not let go", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2"]);
  const signals = [];
  const worker = async (act, n, { attempt, signal }) => {
    signals.push(signal);
    if (n === 0 && attempt === 1) await new Promise(() => {}); // ignores its signal for good
    if (n === 1 && attempt === 1) await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
    return n;
  };
  const { job: j, events } = job(hub, [0, 1], worker, { maxProviders: 2, taskTimeoutMs: 30 });
  assert.deepEqual(await j.run(), [0, 1]);
  assert.ok(signals[0].aborted && signals[0].reason instanceof TaskTimeoutError);
  assert.equal(kinds(events, "task_retry").length, 2);
  // The worker of task 1 let go: its activity was kept. Task 0's was given up and replaced.
  assert.equal(kinds(events, "rented").length, 3);
  assert.deepEqual(hub.live(), []);
});

test("a job whose every provider lacks the image says why it passed them over", { timeout: 10_000 }, async () => {
  const { job: j } = job(new FakeHub(["p1", "p2"], { lacking: ["p1", "p2"] }), [1, 2], square, { startTimeoutMs: 200 });
  const error = await j.run().catch((e) => e);
  assert.ok(error instanceof NoMatchError, String(error));
  assert.match(error.message, /^no provider for this job after 0\.2 s: no provider can take the demand/);
  assert.match(error.message, /\(this job passed over 2 providers that failed it; the last, p2: p2 does not hold kiln-busybox:latest\)$/);
});

test("with no provider at all, the job ends with NoMatchError after startTimeoutMs", { timeout: 10_000 }, async () => {
  const { job: j, events } = job(new FakeHub([]), [1, 2], square, { startTimeoutMs: 200 });
  const error = await j.run().catch((e) => e);
  assert.ok(error instanceof NoMatchError, String(error));
  assert.match(error.message, /^no provider for this job after 0\.2 s: no provider can take the demand/);
  assert.ok(kinds(events, "waiting").length >= 1);
});

test("when no provider is left for a task already tried, it fails with its attempts, not with a NoMatch", { timeout: 10_000 }, async () => {
  const losing = (hub) => async (act) => {
    hub.lose(act.provider);
    throw act.lost;
  };
  const hub = new FakeHub(["only"]);
  const error = await job(hub, [0, 1], losing(hub), { startTimeoutMs: 100 }).job.run().catch((e) => e);
  assert.ok(error instanceof TaskFailedError, String(error));
  assert.equal(error.index, 0);
  assert.ok(error.attempts.length === 1 && error.attempts[0] instanceof ProviderLostError);
  assert.ok(error.cause instanceof NoMatchError);
  assert.match(error.message, /\(no provider is left to run it\): NoMatchError: no provider for this job after 0\.1 s/);

  const other = new FakeHub(["only"]);
  const results = await job(other, [0, 1], losing(other), { startTimeoutMs: 100, returnExceptions: true }).job.run();
  assert.ok(results.every((r) => r instanceof TaskFailedError && r.cause instanceof NoMatchError));
  assert.deepEqual(results.map((r) => r.attempts.length), [1, 0]);
});

test("a provider that joins mid-job gets work", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1"]);
  setTimeout(() => hub.join("p2"), 50);
  const slow = async (act, n) => {
    await sleep(20);
    return n;
  };
  const { job: j } = job(hub, Array.from({ length: 16 }, (_, i) => i), slow, { maxProviders: 2 });
  assert.deepEqual(await j.run(), Array.from({ length: 16 }, (_, i) => i));
  assert.ok(j.summary.tasksPerProvider.get("p1") > 0);
  assert.ok(j.summary.tasksPerProvider.get("p2") > 0);
});

test("a lost hub connection ends the job with it", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2"]);
  const worker = async (act, n) => {
    if (n === 3) throw new ConnectionLostError("the connection to the hub was lost: gone");
    return square(act, n);
  };
  await assert.rejects(job(hub, Array.from({ length: 8 }, (_, i) => i), worker).job.run(), ConnectionLostError);
  assert.deepEqual(hub.live(), []);
});

test("a task cut by a reconnect is tried again without counting against its retries", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2"]);
  let blips = 3;
  hub.reconnected = async () => {
    await sleep(5);
    return true; // the connection is back
  };
  const worker = async (act, n) => {
    if (n === 1 && blips > 0) {
      blips -= 1;
      throw new ConnectionLostError("the connection to the hub was lost: a blip");
    }
    return square(act, n);
  };
  const { job: made, events } = job(hub, [0, 1, 2], worker, { retries: 0 });
  assert.deepEqual(await made.run(), [0, 1, 4]);
  assert.equal(made.summary.retries, 0, "a blip is not the task's fault");
  assert.equal(events.filter((e) => e.kind === "task_retry" && /dropped and is back/.test(e.detail)).length, 3);

  const gone = new FakeHub(["p1"]);
  gone.reconnected = async () => false;
  const failing = async () => {
    throw new ConnectionLostError("the connection to the hub was lost: for good");
  };
  await assert.rejects(job(gone, [0], failing).job.run(), ConnectionLostError);
});

test("the AbortSignal cancels the job: every attempt's signal fires and every activity is released", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2"]);
  const controller = new AbortController();
  let started = 0;
  const waiting = async (act, n, { signal }) => {
    started += 1;
    await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  };
  const running = job(hub, Array.from({ length: 8 }, (_, i) => i), waiting, { signal: controller.signal }).job.run();
  while (started < 2) await sleep(5);
  controller.abort(new Error("user gave up"));
  await assert.rejects(running, (e) => e instanceof CancelledError && e.cause.message === "user gave up");
  assert.equal(hub.rented.length, 2);
  assert.deepEqual(hub.live(), []);
});

test("results() yields as tasks finish; stopping early ends the job and releases what it held", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1", "p2"]);
  const worker = async (act, n, { signal }) => {
    await sleep(n === 0 ? 5 : 1000);
    signal.throwIfAborted();
    return n;
  };
  const { job: j } = job(hub, [0, 1, 2, 3], worker, { maxProviders: 2 });
  for await (const [index, value] of j.results()) {
    assert.deepEqual([index, value], [0, 0]);
    break;
  }
  assert.deepEqual(hub.live(), []);
});

test("the summary reads as Python's JobSummary.lines()", { timeout: 10_000 }, () => {
  const summary = new JobSummary(5);
  Object.assign(summary, { succeeded: 4, failed: 1, attempts: 7, retries: 2, wallSeconds: 3.14159 });
  summary.tasksPerProvider = new Map([["p2", 3], ["p1", 1]]);
  summary.cpuSeconds = new Map([["p1", 0.5], ["p3", 1.234]]);
  summary.failedProviders = new Set(["p3"]);
  // Python's output for the same numbers.
  assert.deepEqual(summary.lines(), [
    "tasks 5: 4 done, 1 failed; attempts 7, retries 2; wall time 3.14 s",
    "  p1: 1 tasks, 0.50 container CPU-seconds",
    "  p2: 3 tasks, 0.00 container CPU-seconds",
    "  p3: 0 tasks, 1.23 container CPU-seconds  (failed)",
  ]);
  assert.deepEqual(new JobSummary(0).lines(), ["tasks 0: 0 done, 0 failed; attempts 0, retries 0; wall time 0.00 s"]);
});

test("a worker that is not a function is refused before anything is rented", { timeout: 10_000 }, () => {
  const hub = new FakeHub(["p1"]);
  for (const bad of [undefined, null, 42, "square", { run: square }, Promise.resolve(1)]) {
    assert.throws(() => new Job(hub, [1], bad, { image: IMAGE }), /worker must be a function/, String(bad));
  }
  assert.throws(() => new Job(hub, [1], square, { image: IMAGE, setup: 1 }), /setup must be a function: .*, not a number$/);
  assert.throws(() => new Job(hub, [1], square, { image: IMAGE, teardown: {} }), /teardown must be a function: .*, not an object$/);
  assert.deepEqual(hub.rents, [], "no rent was sent");
});

test("a worker returning no promise fails its task with a UsageError saying so; a plain function returning one is a worker", { timeout: 10_000 }, async () => {
  const hub = new FakeHub(["p1"]);
  const error = await job(hub, [1, 2], (act, n) => n * n, { retries: 2 }).job.run().catch((e) => e);
  assert.ok(error instanceof TaskFailedError, String(error));
  assert.ok(error.cause instanceof UsageError);
  assert.match(error.message, /failed after 1 attempt: UsageError: the worker must return a promise \(be an async function\), and it returned a number$/);
  assert.deepEqual(hub.live(), []);
  const plain = (act, n) => square(act, n);
  assert.deepEqual(await job(new FakeHub(["p1"]), [1, 2], plain).job.run(), [1, 4]);
});

test("options are checked before anything is rented", { timeout: 10_000 }, () => {
  const hub = new FakeHub(["p1"]);
  assert.throws(() => new Job(hub, [1], square, {}), UsageError);
  assert.throws(() => new Job(hub, [1], "square", { image: IMAGE }), UsageError);
  for (const bad of [{ maxProviders: 0 }, { retries: -1 }, { retries: 1.5 }, { taskTimeoutMs: 0 }]) {
    assert.throws(() => new Job(hub, [1], square, { image: IMAGE, ...bad }), UsageError, JSON.stringify(bad));
  }
  assert.deepEqual(hub.rents, []);
});

test("a request lost while its activity lives is tried again on it and blames nobody", { timeout: 10_000 }, async () => {
  // A provider_lost with no activity_lost before it: a link between hubs broke under the request,
  // and the hub holds the activity until its provider is back.
  const hub = new FakeHub(["moving"]);
  let hiccups = 2;
  const made = job(hub, Array.from({ length: 9 }, (_, i) => i), async (act, n) => {
    if (n % 3 === 0 && hiccups-- > 0) throw new ProviderLostError("provider 'moving' disconnected: the link to its hub ended");
    return n;
  }, { retries: 1 });
  assert.deepEqual(await made.job.run(), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(kinds(made.events, "provider_banned"), []);
  assert.equal(hub.rented.length, 1, "the activity is kept");
});
