// AbortSignal on file streams: a download or upload cancelled mid-way rejects at once with
// CancelledError and leaves no half-written file. Its own hub and provider: cancelling
// mid-stream can wedge the provider (see provider_bugs.test.js), which must not spoil
// other suites.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { CancelledError, connect } from "../../src/node/index.js";
import { IMAGE, sleep, startCluster } from "../support/harness.js";

const tmp = mkdtempSync(join(tmpdir(), "kiln-js-abort-"));
let cluster;
let requestor;
before(async () => {
  cluster = await startCluster([{ name: "pab", cpus: 1, memory: "1GiB" }]);
  requestor = await connect(cluster.url);
});
after(async () => {
  // Bounded: a provider wedged by the cancels may never answer the releases.
  await Promise.race([requestor?.close(), sleep(10_000)]);
  await cluster?.stop();
});

test("an AbortSignal cancels a download mid-stream", { timeout: 60_000 }, async () => {
  const act = await requestor.rent({ image: IMAGE, demand: { cpus: 0.5, memory: "256MiB" } });
  await act.run(["sh", "-c", "mkdir -p /golem/output && head -c 100000000 /dev/zero > /golem/output/big"]);
  const controller = new AbortController();
  const dest = join(tmp, "cancelled.bin");
  const download = act.downloadFile("/golem/output/big", dest, { signal: controller.signal });
  setTimeout(() => controller.abort(), 200);
  const started = Date.now();
  await assert.rejects(download, (e) => e instanceof CancelledError && e.code === "cancelled");
  assert.ok(Date.now() - started < 2000);
  assert.ok(!existsSync(dest), "no half-written file is left");
  assert.deepEqual(readdirSync(tmp), [], "nor its temporary file");
  await assert.rejects(act.downloadBytes("/golem/output/big", { signal: AbortSignal.abort() }), CancelledError);
});

test("an AbortSignal cancels an upload mid-stream", { timeout: 60_000 }, async () => {
  const act = await requestor.rent({ image: IMAGE, demand: { cpus: 0.5, memory: "256MiB" } });
  await assert.rejects(act.sendBytes("x", "/golem/input/never", { signal: AbortSignal.abort() }), CancelledError);
  const upload = new AbortController();
  const sending = act.sendBytes(new Uint8Array(64 * 2 ** 20), "/golem/input/partial", { signal: upload.signal });
  setTimeout(() => upload.abort(new Error("changed my mind")), 50);
  const started = Date.now();
  await assert.rejects(sending, (e) => e instanceof CancelledError && e.cause.message === "changed my mind");
  assert.ok(Date.now() - started < 2000);
});
