// A requestor's own network blip, end to end: a real hub and provider, and a TCP proxy
// between the client and the hub that cuts every connection and refuses new ones for a while;
// and the hub itself killed with SIGKILL and started again on the same data directory.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createConnection, createServer } from "node:net";

import { ConnectionLostError, connect } from "../../src/node/index.js";
import { Cluster, ensureImage, sleep } from "../support/harness.js";

/** Relays TCP to `target`; `cut(ms)` destroys every connection and refuses new ones for `ms`. */
class Proxy {
  /** @param {string} target a ws:// address */
  constructor(target) {
    const { hostname, port } = new URL(target);
    this.refusingUntil = 0;
    /** @type {Set<import("node:net").Socket>} */
    this.sockets = new Set();
    this.server = createServer((client) => {
      if (Date.now() < this.refusingUntil) {
        client.resetAndDestroy(); // as a network that fails
        return;
      }
      const upstream = createConnection({ host: hostname, port: Number(port) });
      for (const [from, to] of [[client, upstream], [upstream, client]]) {
        this.sockets.add(from);
        from.pipe(to);
        from.on("error", () => to.destroy());
        from.on("close", () => {
          this.sockets.delete(from);
          to.destroy();
        });
      }
    });
    this.url = "";
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve(undefined)));
    this.url = `ws://127.0.0.1:${/** @type {import("node:net").AddressInfo} */ (this.server.address()).port}`;
  }

  /** @param {number} ms */
  cut(ms) {
    this.refusingUntil = Date.now() + ms;
    for (const socket of this.sockets) socket.resetAndDestroy(); // no close frame, no FIN
  }

  async stop() {
    this.cut(0);
    await new Promise((resolve) => this.server.close(() => resolve(undefined)));
  }
}

/** @type {Cluster} */
let cluster;

before(async () => {
  ensureImage();
  cluster = new Cluster();
  await cluster.startHub("--grace", "30");
  await cluster.startProvider("blip", { cpus: 2, memory: "1GiB" });
});

after(async () => {
  await cluster?.stop();
});

/** @param {() => boolean} condition */
async function waitUntil(condition, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    assert.ok(Date.now() < deadline, "condition not reached in time");
    await sleep(50);
  }
}

test("a requestor cut off for 5 s finds its activity after it reconnects", { timeout: 120_000 }, async () => {
  const proxy = new Proxy(cluster.url);
  await proxy.start();
  const requestor = await connect(proxy.url, { name: "blip" });
  try {
    const act = await requestor.rent({ image: "kiln-busybox:latest", demand: { cpus: 0.5, memory: "64MiB" } });
    const before = requestor.connection;
    const inFlight = act.run(["sleep", "30"]);
    await sleep(200);
    proxy.cut(5_000);
    await assert.rejects(inFlight, ConnectionLostError);
    await waitUntil(() => requestor.reconnecting);
    const started = Date.now();
    const result = await act.run(["sh", "-c", "echo back"]); // waits out the reconnect, then runs on the new connection
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "back\n");
    const waited = Date.now() - started;
    assert.ok(waited > 4_000 && waited < 15_000, `waited ${waited} ms`);
    assert.notEqual(requestor.connection, before);
    assert.equal(requestor.gone, null);
    assert.equal(act.lost, null);
    assert.deepEqual(requestor.activities.map((a) => a.id), [act.id]);
    assert.equal((await act.run(["true"])).exitCode, 0);
  } finally {
    await requestor.close();
    await proxy.stop();
  }
  assert.deepEqual(requestor.activities, [], "close() released it");
});

test("the hub killed and started again: the activity keeps its container, and a job finishes right", { timeout: 120_000 }, async () => {
  const requestor = await connect(cluster.url, { name: "restart" });
  try {
    const act = await requestor.rent({ image: "kiln-busybox:latest", demand: { cpus: 0.5, memory: "64MiB" } });
    const host = (await act.run(["sh", "-c", "echo kept > /golem/work/note; hostname"])).stdout;
    await cluster.restartHub();
    const after = await act.run(["sh", "-c", "cat /golem/work/note; hostname"]); // waits out the reconnect
    assert.equal(after.stdout, `kept\n${host}`);
    assert.equal(act.lost, null);
    await act.release();

    let done = 0;
    const restarted = (async () => {
      while (done < 5) await sleep(20);
      await cluster.restartHub();
    })();
    const results = await requestor.map([...Array(20).keys()], async (a, n) => {
      const out = (await a.run(["sh", "-c", `sleep 0.2; echo $((${n} * ${n}))`])).stdout;
      done += 1;
      return Number(out);
    }, { image: "kiln-busybox:latest", demand: { cpus: 0.5, memory: "64MiB" }, maxProviders: 1, retries: 2 });
    await restarted;
    assert.deepEqual(results, [...Array(20).keys()].map((n) => n * n));
  } finally {
    await requestor.close();
  }
});
