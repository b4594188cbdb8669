// A service on real providers (src/service.js): two replicas of busybox httpd answer through
// svc.forward; one replica's provider is SIGKILLed; requests keep answering and the replica
// comes back on the third provider. And the requestor's own connection cut: the replicas start
// again in place once it is back. (test/unit/service.test.js holds the replica machine.)
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { createServer, connect as dial } from "node:net";

import { Http, connect } from "../../src/node/index.js";
import { IMAGE, startCluster } from "../support/harness.js";

/** @type {import("../support/harness.js").Cluster | undefined} */
let cluster;
after(async () => {
  await cluster?.stop();
});

/**
 * Relays TCP to `url`'s port; `cut(ms)` resets every connection (no close frame, no FIN) and
 * refuses new ones for `ms`.
 * @param {string} url
 */
async function proxy(url) {
  const port = Number(new URL(url).port);
  /** @type {Set<import("node:net").Socket>} */
  const sockets = new Set();
  let refusingUntil = 0;
  const server = createServer((down) => {
    if (performance.now() < refusingUntil) return void down.resetAndDestroy();
    const up = dial(port, "127.0.0.1");
    for (const [from, to] of [[down, up], [up, down]]) {
      sockets.add(from);
      from.pipe(to);
      from.on("error", () => to.destroy());
      from.on("close", () => {
        sockets.delete(from);
        to.destroy();
      });
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    url: `ws://127.0.0.1:${address.port}`,
    /** @param {number} ms */
    cut(ms) {
      refusingUntil = performance.now() + ms;
      for (const socket of sockets) socket.resetAndDestroy();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve(undefined)));
    },
  };
}

/** GET / through the forward: the page, or rejects when no answer comes whole. */
function get(port) {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("no answer in 5 s")));
    req.on("error", reject);
    req.end();
  });
}

test("a service keeps answering while a replica's provider is SIGKILLed", { timeout: 150_000 }, async () => {
  cluster = await startCluster(["s1", "s2", "s3"].map((name) => ({ name, cpus: 1, memory: "1GiB" })));
  const names = [...cluster.providers.keys()];
  const requestor = await connect(cluster.url, { name: "js-service" });
  const events = [];
  try {
    const svc = await requestor.service({
      image: IMAGE,
      demand: { cpus: 0.5, memory: "64MiB" },
      command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/golem/www"],
      ports: [8080],
      health: Http(8080, "/"),
      replicas: 2,
      setup: (act) => act.sendBytes(new TextEncoder().encode(`served by ${act.provider}\n`), "/golem/www/index.html"),
      onEvent: (event) => events.push(event),
    });
    try {
      const fwd = await svc.forward(8080, { localPort: 0 });
      const first = new Set(svc.replicas.map((r) => r.provider));
      assert.equal(first.size, 2);
      const page = (p) => `served by ${p}\n`;
      const seen = new Set();
      for (let i = 0; i < 4; i++) seen.add(await get(fwd.port));
      assert.deepEqual(seen, new Set([...first].map(page)));

      const victim = svc.replicas[0].provider;
      const spare = names.find((n) => !first.has(n));
      await cluster.providers.get(victim).kill("SIGKILL");
      const killed = performance.now();
      const answers = [];
      while (!(svc.replicas[0].state === "healthy" && svc.replicas[0].provider === spare)) {
        assert.ok(performance.now() - killed < 60_000, JSON.stringify(svc.events));
        answers.push(await get(fwd.port).catch(() => null));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const back = (performance.now() - killed) / 1000;
      const failed = answers.filter((a) => a === null).length;
      console.log(`replica back on ${spare} ${back.toFixed(2)} s after the SIGKILL; ${answers.length} requests, ${failed} failed`);
      assert.ok(answers.length >= 3, "the replacement came before any request could test the gap");
      assert.ok(failed <= 1, JSON.stringify(answers));
      const after = new Set();
      for (let i = 0; i < 4; i++) after.add(await get(fwd.port));
      assert.deepEqual(after, new Set([...first].filter((p) => p !== victim).concat([spare]).map(page)));
      const mine = events.filter((e) => e.replica === 0).map((e) => [e.kind, e.provider]);
      assert.ok(mine.some(([kind, provider]) => kind === "replace" && provider === victim), JSON.stringify(mine));
      assert.deepEqual(mine.slice(-2), [["start", spare], ["healthy", spare]]);
    } finally {
      await svc.stop();
    }
    assert.deepEqual(svc.replicas.map((r) => [r.state, r.activity]), [["stopped", null], ["stopped", null]]);
  } finally {
    await requestor.close();
  }
});

test("a requestor cut off from the hub restarts its replicas in place", { timeout: 120_000 }, async () => {
  const own = await startCluster(["c1", "c2"].map((name) => ({ name, cpus: 1, memory: "1GiB" })));
  const relay = await proxy(own.url);
  const requestor = await connect(relay.url, { name: "js-service-cut" });
  const events = [];
  try {
    const svc = await requestor.service({
      image: IMAGE,
      demand: { cpus: 0.5, memory: "64MiB" },
      command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/golem/www"],
      health: Http(8080, "/"),
      replicas: 2,
      setup: (act) => act.sendBytes(new TextEncoder().encode(`served by ${act.provider}\n`), "/golem/www/index.html"),
      onEvent: (event) => events.push(event),
    });
    try {
      const fwd = await svc.forward(8080, { localPort: 0 });
      const before = svc.replicas.map((r) => [r.activity?.id, r.provider]);
      const seen = events.length;
      relay.cut(1000);
      const cut = performance.now();
      while (!svc.replicas.every((r) => r.state === "healthy" && r.restarts === 1)) {
        assert.ok(performance.now() - cut < 60_000, JSON.stringify(svc.events));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      console.log(`both replicas healthy again in place ${((performance.now() - cut) / 1000).toFixed(2)} s after the cut`);
      assert.equal(requestor.gone, null);
      assert.deepEqual(svc.replicas.map((r) => [r.activity?.id, r.provider]), before);
      assert.ok(svc.replicas.every((r) => r.replacements === 0), JSON.stringify(svc.events));
      const answers = new Set();
      for (let i = 0; i < 4; i++) answers.add(await get(fwd.port));
      assert.deepEqual(answers, new Set(before.map(([, p]) => `served by ${p}\n`)));
      for (const replica of [0, 1]) {
        const mine = events.slice(seen).filter((e) => e.replica === replica).map((e) => [e.kind, e.reason.split(":")[0]]);
        assert.deepEqual(mine, [
          ["failure", "interrupted, restarted in place"],
          ["start", "interrupted, restarted in place"],
          ["healthy", ""],
        ]);
      }
    } finally {
      await svc.stop();
    }
  } finally {
    await requestor.close();
    await relay.close();
    await own.stop();
  }
});
