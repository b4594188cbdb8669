// Transfers cut off midway must leave the provider serving: two provider bugs this
// client's tests found (a download's stream closed from another thread; an upload's HTTP
// body left half-sent), kept as regression tests. Each test has its own hub and provider.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { CancelledError, connect } from "../../src/node/index.js";
import { IMAGE, startCluster } from "../support/harness.js";

const tmp = mkdtempSync(join(tmpdir(), "kiln-js-bugs-"));
let cluster;
beforeEach(async () => {
  cluster = await startCluster([{ name: "pb", cpus: 1, memory: "1GiB" }]);
});
afterEach(() => cluster?.stop());

test(
  "the activity works after a download cancelled mid-stream",
  {
    timeout: 60_000,
  },
  async () => {
    const requestor = await connect(cluster.url);
    try {
      const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "512MiB" } });
      await act.run(["sh", "-c", "mkdir -p /golem/output && head -c 100000000 /dev/zero > /golem/output/big"]);
      for (let round = 0; round < 3; round++) {
        const controller = new AbortController();
        setTimeout(() => controller.abort(), 200);
        await assert.rejects(act.downloadFile("/golem/output/big", join(tmp, "c.bin"), { signal: controller.signal }), CancelledError);
      }
      const signal = AbortSignal.timeout(20_000);
      assert.equal((await act.downloadBytes("/golem/output/big", { maxBytes: 2e8, signal })).byteLength, 100_000_000);
    } finally {
      await requestor.close();
    }
  },
);

test(
  "the activity works after an upload aborted mid-stream",
  {
    timeout: 60_000,
  },
  async () => {
    const requestor = await connect(cluster.url);
    try {
      const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "512MiB" } });
      for (let round = 0; round < 3; round++) {
        const upload = new AbortController();
        setTimeout(() => upload.abort(), 30 + 40 * round);
        const sending = act.sendBytes(new Uint8Array(64 * 2 ** 20), "/golem/input/partial", { signal: upload.signal });
        await assert.rejects(sending, CancelledError);
        const signal = AbortSignal.timeout(15_000);
        assert.equal((await act.run(["echo", "alive"], { signal })).stdout, "alive\n");
      }
    } finally {
      await requestor.close();
    }
  },
);
