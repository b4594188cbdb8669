// map(worker, parts) as in Python, the old order (parts, worker) accepted for one release with
// one deprecation warning, and parts read as slots free up; against an in-memory renter (its
// own file: the warning is once per process).
import { test } from "node:test";
import assert from "node:assert/strict";

import { NoMatchError } from "../../src/errors.js";
import { Job } from "../../src/executor.js";
import { Requestor } from "../../src/requestor.js";

const IMAGE = "kiln-busybox:latest";

/** A renter of activities on `providers` distinct providers that answer at once, with Requestor's job, map and mapUnordered. */
function renter(providers) {
  const free = [...providers];
  let rents = 0;
  return {
    job: Requestor.prototype.job,
    map: Requestor.prototype.map,
    mapUnordered: Requestor.prototype.mapUnordered,
    async rent() {
      await Promise.resolve();
      const provider = free.shift();
      if (provider === undefined) throw new NoMatchError("every provider is in the job's group");
      rents += 1;
      return {
        id: `a${rents}`,
        provider,
        lost: null,
        released: false,
        cpuSeconds: null,
        async release() {
          this.released = true;
          free.push(provider);
        },
      };
    },
  };
}

const double = async (act, n) => 2 * n;

const warnings = [];
process.on("warning", (warning) => warnings.push(warning));
const tick = () => new Promise((resolve) => setImmediate(resolve));

test("map, mapUnordered and job take the worker first, as in Python; a generator is read as slots free up", { timeout: 10_000 }, async () => {
  const r = renter(["p1", "p2"]);
  assert.deepEqual(await r.map(double, [1, 2, 3], { image: IMAGE }), [2, 4, 6]);
  let read = 0;
  let most = 0;
  const parts = (function* () {
    for (let n = 0; n < 1000; n += 1) {
      read += 1;
      yield n;
    }
  })();
  const worker = async (act, n) => {
    most = Math.max(most, read - n); // parts read but not yet handed to a worker, this one included
    await Promise.resolve();
    return n;
  };
  let count = 0;
  for await (const [index, value] of r.mapUnordered(worker, parts, { image: IMAGE, maxProviders: 2 })) {
    assert.equal(index, value);
    count += 1;
  }
  assert.equal(count, 1000);
  assert.ok(most <= 3, `read ${most} parts ahead of the workers (two slots and one part ahead at most)`);
  const job = r.job(double, [5], { image: IMAGE });
  assert.ok(job instanceof Job);
  assert.deepEqual(await job.run(), [10]);
  assert.deepEqual(await new Job(r, double, [4], { image: IMAGE }).run(), [8]);
  await tick();
  assert.deepEqual(warnings.filter((w) => w.code === "KILN_MAP_ORDER"), [], "the new order warns of nothing");
});

test("the old order, map(parts, worker), still works for one release and warns once", { timeout: 10_000 }, async () => {
  const r = renter(["p1"]);
  assert.deepEqual(await r.map([1, 2, 3], double, { image: IMAGE }), [2, 4, 6]);
  assert.deepEqual(await new Job(r, [7], double, { image: IMAGE }).run(), [14]);
  const seen = [];
  for await (const [index, value] of r.mapUnordered([1], double, { image: IMAGE })) seen.push([index, value]);
  assert.deepEqual(seen, [[0, 2]]);
  await tick();
  const deprecated = warnings.filter((w) => w.code === "KILN_MAP_ORDER");
  assert.equal(deprecated.length, 1, "one warning per process");
  assert.equal(deprecated[0].name, "DeprecationWarning");
  assert.match(deprecated[0].message, /call map\(worker, parts, options\)/);
});
