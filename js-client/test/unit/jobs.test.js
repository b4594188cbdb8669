// The job scheduling core (src/scheduling.js), driven by the job vectors both languages run
// (tests/unit/test_jobs.py runs the same files): calls in, literal answers and events out. No
// timers, no promises, no sleeps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { Redundant, Scheduler, SpotCheck, sameResult } from "../../src/scheduling.js";

const JOBS = fileURLToPath(new URL("../../../protocol/v1/vectors/jobs/", import.meta.url));
const files = readdirSync(JOBS).filter((f) => f.endsWith(".json")).sort();
const vectors = files.map((file) => ({ file, ...JSON.parse(readFileSync(join(JOBS, file), "utf8")) }));

/** One vector's scheduler, the tasks it handed out by index, the events since the last call. */
class Run {
  constructor(vector) {
    const count = vector.items;
    const items = (vector.sized ?? true) ? Array.from({ length: count }, (_, i) => i) : (function* () {
      for (let i = 0; i < count; i += 1) yield i;
    })();
    const options = vector.options ?? {};
    this.verifying = "verify" in options;
    const chances = [...(options.chances ?? [])];
    this.events = [];
    this.core = new Scheduler(items, (kind, task, provider, detail) => this.events.push([kind, task, provider, detail]), {
      retries: options.retries ?? 2,
      returnExceptions: options.return_exceptions ?? false,
      verify: verification(options.verify),
      chance: () => {
        assert.ok(chances.length > 0, "the vector gives no more chances");
        return chances.shift();
      },
    });
    this.tasks = new Map();
  }

  call(step) {
    const core = this.core;
    switch (step.call) {
      case "slots": return core.slots(step.max_providers);
      case "wants_activity": return core.wantsActivity();
      case "too_many_banned": return core.tooManyBanned();
      case "may_serve": return core.mayServe(step.provider);
      case "hold": return core.hold(step.slot, step.provider, step.activity);
      case "free": return core.free(step.slot, step.activity);
      case "provider_failed": return core.providerFailed(step.provider);
      case "ban": return core.ban(step.provider, step.why);
      case "stop": return core.stop();
      case "budget_exceeded": return core.budgetExceeded();
      case "blocked": return core.blocked();
      case "avoid": return [...core.avoid()].sort();
      case "abandon": return core.abandon();
      case "next_task": {
        const task = core.nextTask(step.provider);
        if (task === null) return undefined;
        this.tasks.set(task.index, task);
        return task.index;
      }
      case "start": return core.start(this.tasks.get(step.task), step.provider);
      case "outcome": {
        const error = step.error ?? null;
        const verdict = core.outcome(this.tasks.get(step.task), step.provider, step.outcome, error, error ?? "", step.value ?? null);
        const answer = { keep: verdict.keep };
        const accepted = verdict.accepted ?? null;
        if (this.verifying && accepted !== null) answer.accepted = [accepted.provider, accepted.activity, accepted.value];
        if ((verdict.disputes ?? []).length > 0) answer.disputes = verdict.disputes.map((d) => [d.provider, d.activity, d.agreed]);
        if (verdict.failure !== null) Object.assign(answer, { failed: verdict.failure.message, ends_job: verdict.failure.endsJob });
        return answer;
      }
      case "nowhere_to_run": return core.nowhereToRun(step.why);
      case "never_ran": return core.neverRan();
      case "strand": {
        const failures = [];
        for (const failure of core.strand(step.error, step.error)) {
          failures.push([failure.task.index, failure.message, failure.endsJob]);
          if (failure.endsJob) break;
        }
        return failures;
      }
      case "state": return {
        finished: core.finished,
        stopped: core.stopped,
        read: core.read,
        total: core.total,
        running: core.running,
        holding: core.holding,
        banned: [...core.banned].sort(),
      };
      default: throw new Error(`unknown call ${step.call}`);
    }
  }

  summary() {
    const s = this.core.summary;
    const byName = (map) => Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : 1)));
    const verified = this.verifying ? { verified: s.verified, disputed: s.disputed, lost_by: byName(s.lostBy) } : {};
    return {
      tasks: s.tasks,
      succeeded: s.succeeded,
      failed: s.failed,
      attempts: s.attempts,
      retries: s.retries,
      tasks_per_provider: byName(s.tasksPerProvider),
      ...verified,
    };
  }
}

/** A vector's `verify` option: `{"redundant": n}` or `{"spot_check": p}`. */
function verification(options) {
  if (options === undefined) return null;
  return "redundant" in options ? new Redundant(options.redundant) : new SpotCheck(options.spot_check);
}

for (const vector of vectors) {
  test(`job vector ${vector.file}: ${vector.description}`, () => {
    const run = new Run(vector);
    vector.steps.forEach((step, number) => {
      run.events = [];
      const returned = run.call(step);
      const where = `${vector.file} step ${number} (${step.call})`;
      assert.deepEqual(returned, step.returns, where);
      assert.deepEqual(run.events, step.events ?? [], where);
    });
    assert.deepEqual(run.summary(), vector.summary, vector.file);
  });
}

test("there are job vectors for every rule", () => {
  assert.ok(vectors.length >= 10, `only ${vectors.length} job vectors`);
  const outcomes = new Set(vectors.flatMap((v) => v.steps.filter((s) => s.call === "outcome").map((s) => s.outcome)));
  assert.deepEqual([...outcomes].sort(), ["error", "interrupted", "ok", "provider_lost", "retry", "timeout"]);
});

test("a generator is read as slots need it: one part ahead at most", () => {
  let read = 0;
  const parts = (function* () {
    for (let n = 0; n < 100_000; n += 1) {
      read += 1;
      yield n;
    }
  })();
  const core = new Scheduler(parts, () => {});
  assert.equal(core.total, null);
  assert.ok(core.wantsActivity());
  assert.equal(read, 1);
  core.hold(0, "p1", "a1");
  for (let task = core.nextTask("p1"); task !== null; task = core.nextTask("p1")) {
    assert.equal(read, task.index + 1);
    core.start(task, "p1");
    core.outcome(task, "p1", "ok");
  }
  assert.ok(core.finished);
  assert.deepEqual([core.total, core.summary.tasks, core.summary.succeeded], [100_000, 100_000, 100_000]);
});

test("a stopped job hands out nothing and reads nothing more", () => {
  const core = new Scheduler((function* () {
    for (let n = 0; ; n += 1) yield n;
  })(), () => {});
  core.hold(0, "p1", "a1");
  assert.notEqual(core.nextTask("p1"), null);
  core.stop();
  assert.deepEqual([core.nextTask("p1"), core.wantsActivity(), core.mayServe("p1"), core.read], [null, false, false, 1]);
});

/** A small seeded generator of floats in [0, 1) (mulberry32), so that a failing seed replays. */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

for (const n of [2, 3]) {
  test(`verified jobs driven at random keep the rules (Redundant(${n})): honest results, never twice on one provider, within 2n-1 runs`, () => {
    // As tests/unit/test_market_terms.py drives Python's: attempts end in a random order, some
    // retried; one liar among five providers.
    for (let seed = 0; seed < 20; seed += 1) {
      const random = seeded(seed);
      const providers = ["p1", "p2", "p3", "p4", "liar"];
      const core = new Scheduler(Array.from({ length: 12 }, (_, i) => i), () => {}, { verify: new Redundant(n), retries: 5 });
      providers.forEach((provider, slot) => core.hold(slot, provider, `a-${provider}`));
      const running = [];
      const ran = new Map();
      const results = new Map();
      while (!core.finished) {
        const busy = new Set(running.map(([, p]) => p));
        for (const provider of providers.filter((p) => !busy.has(p))) {
          const task = core.nextTask(provider);
          if (task === null) continue;
          const on = ran.get(task.index) ?? [];
          assert.ok(!on.includes(provider), `seed ${seed}: task ${task.index} ran twice on ${provider}`);
          ran.set(task.index, [...on, provider]);
          core.start(task, provider);
          running.push([task, provider]);
        }
        assert.ok(running.length > 0, `seed ${seed}: a verified job that cannot go on`);
        const [task, provider] = running.splice(Math.floor(random() * running.length), 1)[0];
        let verdict;
        if (random() < 0.1) {
          const on = ran.get(task.index);
          on.splice(on.indexOf(provider), 1); // a retry may come back here, as the rules allow
          verdict = core.outcome(task, provider, "retry", "RetryTask", "RetryTask: flaky");
        } else {
          verdict = core.outcome(task, provider, "ok", null, "", provider === "liar" ? -1 : task.index);
        }
        assert.equal(verdict.failure, null, `seed ${seed}: ${verdict.failure?.message}`);
        if (verdict.accepted != null) {
          results.set(task.index, verdict.accepted.value);
          assert.ok((verdict.disputes ?? []).every((d) => d.provider === "liar" && d.agreed.length >= n));
        }
      }
      assert.deepEqual([...results].sort(([a], [b]) => a - b), Array.from({ length: 12 }, (_, i) => [i, i]), `seed ${seed}`);
      assert.ok([...ran.values()].every((on) => new Set(on).size === on.length && on.length <= 2 * n - 1), `seed ${seed}`);
      assert.equal(core.summary.verified, 12);
      assert.ok([...core.summary.lostBy.keys()].every((p) => p === "liar"));
    }
  });
}

test("results agree by content: two Maps, Sets or numbers JSON writes alike are not the same answer", () => {
  assert.ok(sameResult([1, { a: 2 }], [1, { a: 2 }]));
  assert.ok(sameResult(new Map([["x", 1]]), new Map([["x", 1]])));
  assert.ok(sameResult(new Set([1, 2]), new Set([1, 2])));
  assert.ok(sameResult({ n: 2n }, { n: 2n }));
  const differ = [
    [new Map([["x", 1]]), new Map([["x", 2]])], [new Map(), {}], [new Set([1]), new Set([2])], [Number.NaN, null],
    [[Infinity], [null]], [{ n: Number.NaN }, { n: null }], [1n, 2n], [{ v: new Map([[1, "a"]]) }, { v: new Map([[1, "b"]]) }],
  ];
  for (const [a, b] of differ) assert.ok(!sameResult(a, b), `${String(a)} / ${String(b)}`);
  // A liar's Map is never accepted: the third run breaks the tie.
  const core = new Scheduler([0], () => {}, { verify: new Redundant(2) });
  core.hold(0, "honest", "a1");
  core.hold(1, "liar", "a2");
  const task = core.nextTask("honest");
  core.start(task, "honest");
  assert.equal(core.nextTask("liar"), task);
  core.start(task, "liar");
  assert.equal(core.outcome(task, "liar", "ok", null, "", new Map([["sum", 0]])).accepted ?? null, null);
  assert.equal(core.outcome(task, "honest", "ok", null, "", new Map([["sum", 42]])).accepted ?? null, null, "no two agree yet");
});
