// The Node example runs for real against a hub and two providers and agrees with a local count.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

import { startCluster, ROOT } from "../support/harness.js";

let cluster;
before(async () => {
  cluster = await startCluster([
    { name: "wa", cpus: 1, memory: "1GiB" },
    { name: "wb", cpus: 1, memory: "1GiB" },
  ]);
});
after(() => cluster?.stop());

test("examples/word_count.mjs counts words on the providers", { timeout: 120_000 }, async () => {
  const script = fileURLToPath(new URL("../../../examples/word_count.mjs", import.meta.url));
  const corpus = fileURLToPath(new URL("../../../protocol/v1/PROTOCOL.md", import.meta.url));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [script, "--hub", cluster.url, "--parts", "6", "--top", "5", corpus],
    { cwd: ROOT },
  );
  assert.match(stdout, /characters in \d+ parts/);
  assert.match(stdout, /matches a local count: yes/);
  assert.equal(stdout.trim().split("\n").length, 1 + 5 + 1);
});
