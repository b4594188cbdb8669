// A requestor given several hubs: it joins the first that answers, and when its hub is SIGKILLed
// it dials the next. Real hub processes (SQLite, each its own data folder), no provider needed.
// Then two hubs on one PostgreSQL (started by the harness), one market: a requestor on hub A rents
// a real provider connected to hub B, through A, and keeps it when A is SIGKILLed.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { ConnectionLostError, UsageError, connect } from "../../src/node/index.js";
import { Cluster, IMAGE, Postgres, ensureImage, sleep } from "../support/harness.js";

/** @type {Cluster} */
let a;
/** @type {Cluster} */
let b;

before(async () => {
  a = new Cluster();
  b = new Cluster();
  await Promise.all([a.startHub("--grace", "30"), b.startHub("--grace", "30")]);
});

after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

/** The URL of a hub that is gone: a loopback port nothing listens on any more. */
async function deadHub() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  await new Promise((resolve) => server.close(() => resolve(undefined)));
  return `ws://127.0.0.1:${port}`;
}

test("a requestor joins the first hub that answers", { timeout: 60_000 }, async () => {
  const dead = await deadHub();
  for (const given of [[dead, b.url], `${dead},${b.url}`]) {
    const requestor = await connect(given, { name: "two", releaseOnSignal: false });
    try {
      assert.equal(requestor.url, b.url);
      assert.deepEqual(await requestor.market(), []);
    } finally {
      await requestor.close();
    }
  }
  const alsoDead = await deadHub();
  await assert.rejects(connect([dead, alsoDead], { releaseOnSignal: false }), (e) =>
    e instanceof ConnectionLostError && e.message.startsWith(`no hub answered: ${dead}: `) && e.message.includes(`; ${alsoDead}: `));
  await assert.rejects(connect([b.url, "http://b:7465"]), UsageError);
});

test("a requestor whose hub is SIGKILLed goes on on the next", { timeout: 60_000 }, async () => {
  const requestor = await connect([a.url, b.url], { name: "mover", releaseOnSignal: false });
  try {
    assert.equal(requestor.url, a.url);
    const killed = Date.now();
    await a.hub?.kill("SIGKILL");
    while (requestor.url !== b.url || requestor.reconnecting) {
      assert.ok(Date.now() - killed < 20_000 && requestor.gone === null, "not moved in time");
      await sleep(20);
    }
    console.log(`moved from the killed hub to the next in ${((Date.now() - killed) / 1000).toFixed(2)} s`);
    assert.deepEqual(await requestor.market(), []);
  } finally {
    await requestor.close();
  }
});

describe("two hubs on one PostgreSQL", () => {
  /** @type {Postgres} */
  let pg;
  /** @type {Cluster} */
  let near;
  /** @type {Cluster} */
  let far;
  /** @type {string} */
  let provider;
  /** @type {string} */
  let tmp;

  before(async () => {
    ensureImage();
    tmp = mkdtempSync(join(tmpdir(), "kiln-hubs-"));
    pg = await Postgres.start();
    near = new Cluster();
    far = new Cluster();
    await Promise.all([near.startHub("--db", pg.url, "--grace", "30"), far.startHub("--db", pg.url, "--grace", "30")]);
    provider = await far.startProvider("far", { cpus: 2, memory: "1GiB" });
    await near.waitForProviders([provider]); // hub A sells hub B's provider (it learns of it from the database)
  });

  after(async () => {
    await Promise.all([near?.stop(), far?.stop()]);
    await pg?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("a requestor on hub A rents the provider on hub B: a command, a file each way", { timeout: 120_000 }, async () => {
    const data = randomBytes(16 * 2 ** 20);
    const sha = createHash("sha256").update(data).digest("hex");
    writeFileSync(join(tmp, "up"), data);
    const requestor = await connect(near.url, { name: "across", releaseOnSignal: false });
    try {
      const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "64MiB" } });
      assert.equal(act.provider, provider);
      const ran = await act.run(["sh", "-c", "echo through two hubs; uname -s"]);
      assert.deepEqual([ran.exitCode, ran.stdout], [0, "through two hubs\nLinux\n"]);
      await act.sendFile(join(tmp, "up"), "/golem/input/data");
      const summed = await act.run(["sh", "-c", "sha256sum /golem/input/data; cp /golem/input/data /golem/output/back"]);
      assert.equal(summed.stdout.split(" ")[0], sha, "the provider holds the bytes sent");
      const back = await act.downloadFile("/golem/output/back", join(tmp, "back"));
      assert.ok(readFileSync(back).equals(data), "the bytes downloaded are those sent");
      await act.release();
      assert.deepEqual(await requestor.listActivities(), []);
    } finally {
      await requestor.close();
    }
  });

  test("a requestor given [A, B] keeps its activity when hub A is SIGKILLed", { timeout: 120_000 }, async () => {
    const requestor = await connect([near.url, far.url], { name: "survivor", releaseOnSignal: false });
    try {
      assert.equal(requestor.url, near.url);
      const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "64MiB" } });
      assert.equal(act.provider, provider);
      const host = (await act.run(["sh", "-c", "echo kept > /golem/work/note; hostname"])).stdout;
      const killed = Date.now();
      await near.hub?.kill("SIGKILL");
      // Waits out the reconnect: hub B refuses the session (1013) while A may be alive, then adopts it.
      const after = await act.run(["sh", "-c", "cat /golem/work/note; hostname"]);
      console.log(`the activity answered through hub B ${((Date.now() - killed) / 1000).toFixed(2)} s after hub A was killed`);
      assert.equal(after.stdout, `kept\n${host}`);
      assert.equal(requestor.url, far.url);
      assert.equal(act.lost, null);
      assert.equal(requestor.gone, null);
      assert.deepEqual(requestor.activities.map((a) => a.id), [act.id]);
      await act.release();
    } finally {
      await requestor.close();
    }
  });
});
