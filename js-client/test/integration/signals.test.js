// Ctrl-C in Node: a real Node child process rents a container on a real hub and provider,
// gets SIGINT or SIGTERM, and what it held is released at once (the hub lists no activity,
// the container is gone) rather than held for the hub's grace period; the process exits
// with 130 or 143. With releaseOnSignal: false, or a listener of the program's own, the
// program decides.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import { connect } from "../../src/node/index.js";
import { Cluster, IMAGE, containersOf, ensureImage, sleep } from "../support/harness.js";

const ENTRY = pathToFileURL(new URL("../../src/node/index.js", import.meta.url).pathname).href;
const dir = mkdtempSync(join(tmpdir(), "kiln-js-signals-"));
/** The hub's grace period: a requestor that vanishes without releasing is held this long. */
const GRACE_S = 60;

const CAUGHT = `try {
  await act.run(["sleep", "300"]);
} catch (e) {
  console.log("run ended:", e.name);
}`;

/** @type {Cluster} */
let cluster;
let provider = "";

before(async () => {
  ensureImage();
  cluster = new Cluster();
  await cluster.startHub("--grace", String(GRACE_S));
  provider = await cluster.startProvider("sig", { cpus: 2, memory: "1GiB" });
});
after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A Node process that rents an activity and runs `sleep 300` in it; resolves once it has
 * rented, with the process and its output so far.
 * @param {string} name
 * @param {{options?: object, prelude?: string, work?: string}} [how] `work`: what it does then (default: a
 *   `sleep 300` whose failure it catches)
 */
async function renter(name, { options = {}, prelude = "", work = CAUGHT } = {}) {
  const script = join(dir, `${name}.mjs`);
  writeFileSync(script, `${prelude}
import { connect } from ${JSON.stringify(ENTRY)};
const requestor = await connect(${JSON.stringify(cluster.url)}, { name: ${JSON.stringify(name)}, ...${JSON.stringify(options)} });
const act = await requestor.rent({ image: ${JSON.stringify(IMAGE)}, demand: { cpus: 0.5, memory: "64MiB" } });
console.log("rented", act.id);
${work}
`);
  const child = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "pipe"] });
  const run = { child, out: "", exited: new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal }))) };
  child.stdout.on("data", (data) => (run.out += data));
  child.stderr.on("data", (data) => (run.out += data));
  const deadline = Date.now() + 30_000;
  while (!/rented \w+/.test(run.out)) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `the child did not rent:\n${run.out}`);
    await sleep(50);
  }
  await sleep(300); // the sleep is running
  return run;
}

/** The activities the hub lists at the provider, from a watcher's market. */
async function activitiesAtTheProvider() {
  const watcher = await connect(cluster.url, { name: "watcher", releaseOnSignal: false });
  try {
    const [offer] = await watcher.market();
    return offer.activities;
  } finally {
    await watcher.close();
  }
}

async function releasedWithin(ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if ((await activitiesAtTheProvider()) === 0 && containersOf(provider).length === 0) return true;
    await sleep(100);
  }
  return false;
}

for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]]) {
  test(`${signal} releases what the requestor holds, then the process exits with ${code}`, { timeout: 60_000 }, async () => {
    const run = await renter(`sig-${signal.toLowerCase()}`);
    assert.equal(await activitiesAtTheProvider(), 1);
    assert.equal(containersOf(provider).length, 1);
    run.child.kill(signal);
    assert.deepEqual(await run.exited, { code, signal: null }, run.out);
    assert.ok(await releasedWithin(3_000), `still held after the process exited (the hub's grace is ${GRACE_S} s)`);
  });
}

test("a program that does not catch its calls failing as they are released still exits with 130, after the release", { timeout: 60_000 }, async () => {
  const work = `await requestor.map([1, 2], async (a) => (await a.run(["sleep", "300"])).exitCode,
                                  { image: ${JSON.stringify(IMAGE)}, demand: { cpus: 0.25, memory: "64MiB" } });`;
  const run = await renter("sig-uncaught", { work });
  while (containersOf(provider).length < 2) await sleep(100); // the map's activity as well (one a provider)
  run.child.kill("SIGINT");
  assert.deepEqual(await run.exited, { code: 130, signal: null }, run.out);
  assert.doesNotMatch(run.out, /TaskFailedError|CancelledError/, "no stack trace of what the release made fail");
  assert.ok(await releasedWithin(3_000), `still held after the process exited (the hub's grace is ${GRACE_S} s)`);
});

test("a program with its own SIGINT listener: the requestor is released, and the program decides (no exit here)", { timeout: 60_000 }, async () => {
  const prelude = 'process.on("SIGINT", () => console.log("mine"));';
  const run = await renter("sig-theirs", { prelude });
  run.child.kill("SIGINT");
  assert.ok(await releasedWithin(3_000), run.out);
  // The run failed as its activity went, and with nothing left to do the program ended on its own.
  assert.deepEqual(await run.exited, { code: 0, signal: null }, run.out);
  assert.match(run.out, /mine\n/);
  assert.match(run.out, /run ended: (Cancelled|ConnectionClosed)Error/); // its activity was released under it
});

test("the listeners are there only while a requestor that wants them is open", { timeout: 30_000 }, async () => {
  const before = [process.listenerCount("SIGINT"), process.listenerCount("SIGTERM")];
  const counts = () => [process.listenerCount("SIGINT") - before[0], process.listenerCount("SIGTERM") - before[1]];
  const first = await connect(cluster.url, { name: "l1" });
  assert.deepEqual(counts(), [1, 1]);
  const second = await connect(cluster.url, { name: "l2" });
  const aside = await connect(cluster.url, { name: "l3", releaseOnSignal: false });
  assert.deepEqual(counts(), [1, 1], "one listener each, however many requestors");
  await first.close();
  assert.deepEqual(counts(), [1, 1]);
  await second.close();
  assert.deepEqual(counts(), [0, 0], "Node's default behaviour is back");
  await aside.close();
  await assert.rejects(connect(cluster.url, { releaseOnSignal: /** @type {any} */ ("no") }), /releaseOnSignal is true or false/);
  assert.deepEqual(counts(), [0, 0]);
});

// Last: what it leaves behind is held for the grace period.
test("releaseOnSignal: false leaves the signal to Node: the process dies, and the hub holds what it had", { timeout: 60_000 }, async () => {
  const run = await renter("sig-optout", { options: { releaseOnSignal: false } });
  run.child.kill("SIGINT");
  assert.deepEqual(await run.exited, { code: null, signal: "SIGINT" });
  await sleep(1_000);
  assert.equal(await activitiesAtTheProvider(), 1, "held for the grace period");
  assert.equal(containersOf(provider).length, 1); // (the cluster's stop removes it)
});
