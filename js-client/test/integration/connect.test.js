// Ports of a container (protocol 1.7) end to end: a hub process, a provider process, the real
// Docker engine, a real container running busybox's httpd on its loopback. Reached with
// act.connect (a Duplex) and act.forward (a local port fetched through).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";

import { ConnectionRefusedError, connect } from "../../src/node/index.js";
import { IMAGE, sleep, startCluster } from "../support/harness.js";

const SMALL = { cpus: 0.5, memory: "128MiB" };
const MiB = 2 ** 20;
const PORT = 8080;
const ECHO = 9001;
const PAGE = "hello from the container\n";

let cluster;
let requestor;
let act;
const serving = new AbortController();
before(async () => {
  cluster = await startCluster([{ name: "pc", cpus: 2, memory: "2GiB" }]);
  requestor = await connect(cluster.url, { name: "js-connect" });
  act = await requestor.rent({ image: IMAGE, demand: SMALL });
  await act.sendBytes(PAGE, "/golem/work/index.html");
  await act.run(["dd", "if=/dev/urandom", "of=/golem/work/big", "bs=1048576", "count=8"], { check: true });
  // The server runs until the test ends (its run is cancelled then).
  act.run(["httpd", "-f", "-p", String(PORT), "-h", "/golem/work"], { signal: serving.signal }).catch(() => {});
  act.run(["nc", "-ll", "-p", String(ECHO), "-e", "cat"], { signal: serving.signal }).catch(() => {});
  await listening(PORT);
  await listening(ECHO);
});
after(async () => {
  serving.abort();
  await requestor?.close();
  await cluster?.stop();
});

/** Wait until something listens on `port` in the container (each try is a connect, reset at once). */
async function listening(port) {
  for (let i = 0; i < 100; i++) {
    try {
      (await act.connect(port)).destroy();
      return;
    } catch (e) {
      if (!(e instanceof ConnectionRefusedError)) throw e;
      await sleep(50);
    }
  }
  assert.fail(`nothing listens on port ${port}`);
}

test("act.connect: a Duplex carries an HTTP request and its answer; end() is a half-close, 'end' the server's close", { timeout: 60_000 }, async () => {
  const sock = await act.connect(PORT);
  sock.end("GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n");
  const chunks = [];
  sock.on("data", (chunk) => chunks.push(chunk));
  await once(sock, "end");
  const answer = Buffer.concat(chunks).toString();
  assert.match(answer, /^HTTP\/1\.[01] 200/);
  assert.ok(answer.endsWith(PAGE), answer);
  await assert.rejects(act.connect(9), ConnectionRefusedError);
});

test("act.connect: an echo server's bytes come back; the round trip of one byte", { timeout: 60_000 }, async () => {
  const sock = await act.connect(ECHO);
  const times = [];
  for (let i = 0; i < 200; i++) {
    const started = performance.now();
    sock.write(Buffer.from([i]));
    const [back] = await once(sock, "data");
    times.push(performance.now() - started);
    assert.deepEqual([...back], [i]);
  }
  sock.destroy();
  times.sort((a, b) => a - b);
  console.log(`# 1-byte round trip: median ${times[100].toFixed(2)} ms, p90 ${times[180].toFixed(2)} ms`);
});

test("act.forward: fetch through a local port, several connections at once, each its own connect", { timeout: 60_000 }, async () => {
  const fwd = await act.forward(PORT, { localPort: 0 });
  try {
    const base = `http://${fwd.host}:${fwd.port}`;
    const pages = await Promise.all(Array.from({ length: 6 }, () => fetch(`${base}/index.html`).then((r) => r.text())));
    assert.deepEqual(pages, Array(6).fill(PAGE));
    const timed = async (fn) => {
      const started = performance.now();
      const value = await fn();
      return [value, (performance.now() - started) / 1000];
    };
    const [big, fetched] = await timed(async () => Buffer.from(await (await fetch(`${base}/big`)).arrayBuffer()));
    const [downloaded, direct] = await timed(() => act.downloadBytes("/golem/work/big", { maxBytes: 16 * MiB }));
    assert.equal(big.byteLength, 8 * MiB);
    assert.ok(big.equals(Buffer.from(downloaded)), "the bytes through the forward are the file's");
    const rate = (seconds) => `${(8 / seconds).toFixed(0)} MiB/s`;
    console.log(`# 8 MiB: through forward ${rate(fetched)}, downloadBytes ${rate(direct)}`);
  } finally {
    await fwd.close();
  }
  // Closed: nothing listens there any more.
  await assert.rejects(fetch(`http://${fwd.host}:${fwd.port}/`));
});

test("act.publish: the hub serves the port at its URL until revoke(), then 404", { timeout: 60_000 }, async () => {
  const pub = await act.publish(PORT);
  assert.ok(pub.url.endsWith(`/s/${pub.token}/`), pub.url);
  const answer = await fetch(`${pub.url}index.html`);
  assert.deepEqual([answer.status, await answer.text()], [200, PAGE]);
  await pub.revoke();
  assert.equal((await fetch(`${pub.url}index.html`)).status, 404);
  await assert.rejects(act.unpublish(pub.token), (e) => e.code === "not_published");
});
