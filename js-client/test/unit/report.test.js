// A job's timeline in JavaScript: the attempts the executor records against an in-memory
// renter, the task reports it hands the renter, the HTML report (escaped, self-contained) and
// job.report(path) writing it. (python: tests/unit/test_job_report.py holds the same.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { NoMatchError, ProviderLostError, RetryTaskError } from "../../src/errors.js";
import { Job, JobSummary } from "../../src/executor.js";
import { ATTEMPTS_KEPT, MAX_REASON, Timeline, renderHtml } from "../../src/report.js";
import { Requestor } from "../../src/requestor.js";
import { LIMITS, connected, tick } from "../support/fake_socket.js";

const HOSTILE = "<script>alert('x')</script><img src=x onerror=\"alert(1)\"> & \u2028";

/** The Gantt's bars: [outcome, task]. @param {string} page */
const bars = (page) => [...page.matchAll(/<rect class="bar (\w+)" data-task="(\d+)"/g)].map((m) => [m[1], Number(m[2])]);

/** Providers by name, a group on distinct providers; every task report kept. */
class Renter {
  constructor(names) {
    this.names = names;
    this.live = [];
    this.rented = [];
    this.reports = [];
  }

  async rent({ exclude = [], group }) {
    await Promise.resolve();
    const taken = new Set(this.live.filter((a) => a.group === group && a.lost === null).map((a) => a.provider));
    const name = this.names.find((n) => !exclude.includes(n) && !taken.has(n));
    if (name === undefined) throw new NoMatchError("every provider is excluded or in the group");
    const renter = this;
    const activity = {
      id: `a${this.rented.length + 1}`,
      provider: name,
      group,
      lost: null,
      released: false,
      cpuSeconds: null,
      cost: null,
      moved: 0,
      async release() {
        this.released = true;
        renter.live.splice(renter.live.indexOf(this), 1);
      },
    };
    this.live.push(activity);
    this.rented.push(activity);
    return activity;
  }

  reportTask(report) {
    this.reports.push(report);
  }
}

/** Fails every task on `bad` (a hostile reason), counts 10 bytes moved per attempt. */
const picky = async (act, n) => {
  act.moved += 10;
  await Promise.resolve();
  if (act.provider === "bad") throw new RetryTaskError(HOSTILE);
  return n;
};

test("every attempt is recorded with its outcome, reason and bytes, and told to the renter", async () => {
  const renter = new Renter(["bad", "good"]);
  const job = new Job(renter, picky, [0, 1, 2, 3, 4, 5], { image: "img", maxProviders: 2, retries: 3 });
  assert.deepEqual(await job.run(), [0, 1, 2, 3, 4, 5]);
  const attempts = job.attempts;
  assert.equal(attempts.length, job.summary.attempts);
  assert.deepEqual(new Set(attempts.filter((a) => a.outcome === "done").map((a) => a.task)), new Set([0, 1, 2, 3, 4, 5]));
  const retried = attempts.filter((a) => a.outcome === "retried");
  assert.ok(retried.length > 0 && retried.every((a) => a.provider === "bad" && a.reason === `RetryTaskError: ${HOSTILE}`));
  assert.ok(attempts.every((a) => a.bytes === 10 && a.end !== null && a.start <= a.end));
  assert.throws(() => { attempts[0].outcome = "failed"; }, TypeError, "a copy, frozen");

  const started = renter.reports.filter((r) => r.state === "started").map((r) => `${r.task}/${r.attempt}`);
  const ended = renter.reports.filter((r) => r.state !== "started");
  assert.equal(new Set(started).size, started.length);
  assert.deepEqual(new Set(ended.map((r) => `${r.task}/${r.attempt}`)), new Set(started));
  assert.ok(renter.reports.every((r) => r.group === job.group && r.activity !== undefined));
  assert.deepEqual(new Set(ended.map((r) => r.state)), new Set(["done", "retried"]));
  assert.ok(ended.filter((r) => r.state === "done").every((r) => r.bytes === 10 && r.reason === ""));
});

test("a lost provider and a task that failed for good are told apart", async () => {
  const renter = new Renter(["flaky", "steady"]);
  const worker = async (act, n) => {
    await Promise.resolve();
    if (act.provider === "flaky") {
      act.lost = new ProviderLostError("gone");
      throw new ProviderLostError("flaky vanished mid-task");
    }
    if (n === 3) throw new Error("three is wrong");
    return n;
  };
  const job = new Job(renter, worker, [0, 1, 2, 3, 4], { image: "img", retries: 2, returnExceptions: true });
  await job.run();
  assert.ok(job.attempts.some((a) => a.provider === "flaky" && a.outcome === "lost"));
  const failed = job.attempts.filter((a) => a.outcome === "failed");
  assert.deepEqual(failed.map((a) => [a.task, a.reason]), [[3, "Error: three is wrong"]]);
  const states = new Set(renter.reports.map((r) => r.state));
  assert.ok(states.has("failed") && states.has("retried"));
});

test("a timeline keeps the latest attempts and clips reasons", () => {
  const timeline = new Timeline(3);
  for (let task = 0; task < 5; task += 1) {
    const started = timeline.start(task, 1, "p1", `a${task}`, task);
    timeline.end(started, "done", "x".repeat(1000), 7, task + 0.5);
  }
  timeline.start(9, 2, "p2", "a9", 6);
  assert.deepEqual(timeline.attempts.map((a) => a.task), [2, 3, 4, 9]);
  assert.equal(timeline.dropped, 2);
  assert.ok(timeline.attempts.slice(0, 3).every((a) => [...a.reason].length === MAX_REASON));
  assert.equal(timeline.attempts[3].outcome, "running");
  assert.equal(ATTEMPTS_KEPT, 10_000);
});

test("the report is self-contained and escapes what providers say", () => {
  const summary = new JobSummary(3);
  Object.assign(summary, { succeeded: 3, attempts: 4, retries: 1, wallSeconds: 2 });
  const attempts = [
    { task: 0, attempt: 1, provider: 'p"1<', activity: "a1", start: 0, end: 0.5, outcome: "retried", reason: HOSTILE, bytes: 100 },
    { task: 0, attempt: 2, provider: "p2", activity: "a2", start: 0.6, end: 1, outcome: "done", reason: "", bytes: 2048 },
    { task: 1, attempt: 1, provider: "p2", activity: "a2", start: 1, end: 1.5, outcome: "done", reason: "", bytes: 0 },
    { task: 2, attempt: 1, provider: "p2", activity: "a3", start: 1.2, end: null, outcome: "running", reason: "", bytes: 0 },
  ];
  const page = renderHtml("job <1>", summary, attempts);
  assert.ok(!page.includes("<script") && !page.includes('onerror="') && !page.includes("<img"));
  assert.ok(page.includes("&lt;script&gt;") && page.includes("p&quot;1&lt;") && page.includes("job &lt;1&gt;"));
  assert.doesNotMatch(page, /(src|href)\s*=\s*["']?(https?:|\/\/)/, "nothing is fetched");
  assert.deepEqual(bars(page).sort(), [["done", 0], ["done", 1], ["retried", 0], ["running", 2]]);
  const ys = Object.fromEntries([...page.matchAll(/data-task="(\d+)" data-attempt="1" x="[\d.]+" y="(\d+)"/g)].map((m) => [m[1], m[2]]));
  assert.notEqual(ys["1"], ys["2"], "attempts overlapping on one provider go on separate lanes");
  assert.equal(page.split("<tr data-task=").length - 1, 1 + attempts.length);
});

test("job.report(path) writes the page reportHtml() gives", async () => {
  const renter = new Renter(["p1", "p2"]);
  const job = new Job(renter, picky, [0, 1, 2, 3], { image: "img", maxProviders: 2 });
  await job.run();
  const dir = await mkdtemp(join(tmpdir(), "kiln-report-"));
  try {
    const path = join(dir, "job.html");
    assert.equal(await job.report(path), path);
    const page = await readFile(path, "utf8");
    assert.equal(page, job.reportHtml());
    assert.deepEqual(bars(page).map(([, task]) => task).sort(), [0, 1, 2, 3]);
    assert.ok(page.includes(job.group));
    assert.match(page, /\d+ attempts of 4 tasks on 2 providers in /);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a requestor sends task reports only to a hub that welcomed it at 1.6, with no id, and clips the reason", async () => {
  const platform = { openSocket: () => assert.fail("no socket"), files: {}, images: {} };
  for (const [version, heard] of [["1.6", true], ["1.5", false]]) {
    const { socket, conn } = await connected(LIMITS, version);
    const requestor = new Requestor(conn, /** @type {any} */ (platform));
    requestor.reportTask({ group: "job-1", task: 3, attempt: 2, state: "started", activity: "a1" });
    requestor.reportTask({ group: "job-1", task: 3, attempt: 2, state: "retried", activity: "a1", reason: "x".repeat(999), bytes: 5 });
    requestor.reportTask({ group: "not a group!", task: 3, attempt: 1, state: "done" }); // out of bounds: dropped
    await tick();
    const sent = socket.take();
    if (!heard) {
      assert.deepEqual(sent, [], "nothing goes to a hub of 1.5");
      continue;
    }
    assert.deepEqual(sent[0], { type: "task", group: "job-1", task: 3, attempt: 2, state: "started", activity: "a1", bytes: 0 });
    assert.equal(sent[1].state, "retried");
    assert.equal([...sent[1].reason].length, MAX_REASON);
    assert.equal(sent.length, 2);
  }
});
