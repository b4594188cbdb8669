import { test } from "node:test";
import assert from "node:assert/strict";

import { parseSize, UsageError, demandMessage, containerPath, InvalidPathError } from "../../src/node/index.js";

test("sizes as people write them", () => {
  assert.equal(parseSize(1024), 1024);
  assert.equal(parseSize("256MiB"), 256 * 2 ** 20);
  assert.equal(parseSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseSize("1.5G"), 1.5e9);
  assert.equal(parseSize(" 10 kb "), 10_000);
  for (const bad of [-1, "1 parsec", "lots", Number.NaN, true, null]) assert.throws(() => parseSize(bad), UsageError);
});

test("a demand is checked before anything is sent", () => {
  assert.deepEqual(demandMessage({ cpus: 0.5, memory: "128MiB" }), {
    cpus: 0.5, memory: 128 * 2 ** 20, storage: 0, labels: {},
  });
  assert.throws(() => demandMessage({ cpus: 0 }), UsageError);
  assert.throws(() => demandMessage({ cpus: "1" }), UsageError);
});

test("container paths are checked locally", () => {
  assert.equal(containerPath("/golem/input/a.txt"), "/golem/input/a.txt");
  for (const bad of ["relative", "/golem/../etc/passwd", "/a//b", "", 5]) {
    assert.throws(() => containerPath(bad), (e) => e instanceof InvalidPathError && e.code === "bad_path");
  }
});
