// A requestor given several hubs: it joins the first that answers, and when its hub is SIGKILLed
// it dials the next. Real hub processes (SQLite, each its own data folder), no provider needed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";

import { ConnectionLostError, UsageError, connect } from "../../src/node/index.js";
import { Cluster, sleep } from "../support/harness.js";

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
