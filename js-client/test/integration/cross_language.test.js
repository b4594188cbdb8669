// A Python requestor (the kiln package) and this JS requestor run jobs at the same time on
// the same providers: both get right answers, and no capacity is ever sold twice (the
// containers running on a provider never add up to more than it offered).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

import { NoMatchError, connect } from "../../src/node/index.js";
import { IMAGE, PYTHON, ROOT, runningLimits, sleep, startCluster } from "../support/harness.js";

const OFFER = { cpus: 2, memory: "1GiB" };
const DEMAND = { cpus: 1, memory: "256MiB" };
const JOBS = 8;
const CONCURRENCY = 3;

const PYTHON_REQUESTOR = `
import asyncio, json, sys
import kiln

async def job(requestor, i):
    while True:
        try:
            act = await requestor.rent(${JSON.stringify(IMAGE)}, kiln.Demand(cpus=1, memory="256MiB"))
            break
        except kiln.NoMatch:
            await asyncio.sleep(0.2)  # every provider busy: the JS side holds the rest
    try:
        await act.send_bytes(str(i).encode(), "/golem/input/n")
        result = await act.run(["sh", "-c", "sleep 1; echo $(( $(cat /golem/input/n) * 7 ))"], timeout=60)
        return int(result.stdout)
    finally:
        await act.release()

async def main():
    async with kiln.connect(sys.argv[1], name="py-requestor") as requestor:
        pending = list(range(${JOBS}))
        results = {}
        async def lane():
            while pending:
                i = pending.pop()
                results[i] = await job(requestor, i)
        await asyncio.gather(*(lane() for _ in range(${CONCURRENCY})))
        print(json.dumps([results[i] for i in range(${JOBS})]))

asyncio.run(main())
`;

let cluster;
before(async () => {
  cluster = await startCluster([
    { name: "xa", ...OFFER },
    { name: "xb", ...OFFER },
  ]);
});
after(() => cluster?.stop());

function runPython(url) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ["-c", PYTHON_REQUESTOR, url], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`python exited ${code}:\n${err}`))));
  });
}

async function runJs(url) {
  const requestor = await connect(url, { name: "js-requestor" });
  try {
    const pending = Array.from({ length: JOBS }, (_, i) => i);
    const results = new Array(JOBS);
    const lane = async () => {
      while (pending.length > 0) {
        const i = pending.pop();
        let act;
        for (;;) {
          try {
            act = await requestor.rent({ image: IMAGE, demand: DEMAND });
            break;
          } catch (e) {
            if (!(e instanceof NoMatchError)) throw e;
            await sleep(200);
          }
        }
        try {
          await act.sendBytes(String(i), "/golem/input/n");
          const r = await act.run(["sh", "-c", "sleep 1; echo $(( $(cat /golem/input/n) * 11 ))"], { timeoutMs: 60_000 });
          results[i] = Number(r.stdout.trim());
        } finally {
          await act.release();
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, lane));
    return results;
  } finally {
    await requestor.close();
  }
}

test("a Python and a JS requestor share the providers; no capacity is sold twice", { timeout: 180_000 }, async () => {
  const providers = [...cluster.providers.keys()];
  let samples = 0;
  let peak = 0;
  let peakCpus = 0;
  const overcommitted = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      for (const name of providers) {
        const running = runningLimits(name);
        const cpus = running.reduce((sum, c) => sum + c.cpus, 0);
        const memory = running.reduce((sum, c) => sum + c.memory, 0);
        peak = Math.max(peak, running.length);
        peakCpus = Math.max(peakCpus, cpus);
        if (cpus > OFFER.cpus + 1e-9 || memory > 2 ** 30) overcommitted.push({ name, cpus, memory });
      }
      samples += 1;
      await sleep(100);
    }
  })();
  try {
    const [python, js] = await Promise.all([runPython(cluster.url), runJs(cluster.url)]);
    assert.deepEqual(python, Array.from({ length: JOBS }, (_, i) => i * 7));
    assert.deepEqual(js, Array.from({ length: JOBS }, (_, i) => i * 11));
  } finally {
    sampling = false;
    await sampler;
  }
  assert.deepEqual(overcommitted, []);
  assert.ok(samples > 20, `only ${samples} samples`);
  assert.ok(peak >= 2, "both requestors were running containers at once");
  assert.equal(peakCpus, OFFER.cpus, "a provider was full (the CPU limits are what is checked)");
  // And the hub agrees: everything is free again.
  const requestor = await connect(cluster.url);
  const market = await requestor.market();
  await requestor.close();
  for (const offer of market) {
    assert.equal(offer.activities, 0);
    assert.equal(offer.free.cpus, offer.offered.cpus);
  }
});
