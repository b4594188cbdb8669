// A command's input and live output, and root by consent (protocol 1.2), end to end: a hub
// process, provider processes, the real Docker engine, real containers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { CommandTimeoutError, NoMatchError, connect } from "../../src/node/index.js";
import { IMAGE, sleep, startCluster } from "../support/harness.js";

const SMALL = { cpus: 0.5, memory: "128MiB" };
const MiB = 2 ** 20;
const tmp = mkdtempSync(join(tmpdir(), "kiln-js-streams-"));

let cluster;
let requestor;
let act;
before(async () => {
  cluster = await startCluster([{ name: "ps", cpus: 2, memory: "2GiB" }]);
  requestor = await connect(cluster.url, { name: "js-streams" });
  act = await requestor.rent({ image: IMAGE, demand: SMALL });
});
after(async () => {
  await requestor?.close();
  await cluster?.stop();
});

/** All of `events`' output of `kind`, and the exit's result. */
async function collect(events) {
  const out = { stdout: [], stderr: [], result: null };
  for await (const event of events) {
    if (event.kind === "exit") out.result = event.result;
    else out[event.kind].push(event.data);
  }
  return { stdout: Buffer.concat(out.stdout), stderr: Buffer.concat(out.stderr), result: out.result };
}

test("live output: the first line arrives while the command still runs", { timeout: 60_000 }, async () => {
  const seen = [];
  for await (const event of act.stream(["sh", "-c", "echo first; sleep 3; echo second >&2; exit 4"])) {
    seen.push({ at: performance.now(), kind: event.kind, text: event.text, result: event.result });
  }
  assert.deepEqual(seen.map((e) => [e.kind, e.text]), [["stdout", "first\n"], ["stderr", "second\n"], ["exit", undefined]]);
  const [first, second, exit] = seen;
  // The command sleeps 3 s between its lines: the first came well before the end.
  assert.ok(exit.at - first.at > 2000, `the first line came ${exit.at - first.at} ms before the exit`);
  assert.ok(second.at - first.at > 2000);
  assert.deepEqual([exit.result.exitCode, exit.result.stdout, exit.result.stderr], [4, "", ""]);
});

test("stdin: 1 MiB of bytes reaches the command whole", { timeout: 60_000 }, async () => {
  const r = await act.run(["wc", "-c"], { stdin: new Uint8Array(MiB).fill(0x78) });
  assert.deepEqual([r.exitCode, r.stdout.trim()], [0, String(MiB)]);
  const text = await act.run(["cat"], { stdin: "héllo\n" });
  assert.equal(text.stdout, "héllo\n");
});

test("stdin from a local file round-trips through cat", { timeout: 60_000 }, async () => {
  const small = join(tmp, "small.bin");
  const data = randomBytes(100_000);
  writeFileSync(small, data);
  const r = await act.run(["cat"], { stdin: { file: small } });
  assert.ok(Buffer.from(r.stdoutBytes).equals(data), `got ${r.stdoutBytes.byteLength} bytes`);

  // Larger than what an exec_result holds: streamed both ways, within credit each way.
  const big = join(tmp, "big.bin");
  const bigData = randomBytes(5 * MiB);
  writeFileSync(big, bigData);
  const out = await collect(act.stream(["cat"], { stdin: { file: big } }));
  assert.equal(out.result.exitCode, 0);
  assert.ok(out.stdout.equals(bigData), `got ${out.stdout.byteLength} of ${bigData.byteLength} bytes back`);
});

test("a command that ends before reading its input: the run succeeds, the rest is dropped", { timeout: 60_000 }, async () => {
  const r = await act.run(["head", "-c", "3"], { stdin: new Uint8Array(8 * MiB).fill(0x61) });
  assert.deepEqual([r.exitCode, r.stdout], [0, "aaa"]);
  assert.equal((await act.run(["echo", "still", "fine"])).stdout, "still fine\n");
});

test("leaving a stream early kills the command", { timeout: 60_000 }, async () => {
  for await (const event of act.stream(["sh", "-c", "echo go; exec sleep 1000"])) {
    assert.equal(event.text, "go\n");
    break;
  }
  const deadline = Date.now() + 15_000;
  let ps = "";
  while (Date.now() < deadline) {
    ps = (await act.run(["ps", "-o", "args"])).stdout;
    if (!ps.includes("sleep 1000")) break;
    await sleep(100);
  }
  assert.ok(!ps.includes("sleep 1000"), ps);
});

test("a streamed command past its timeout throws CommandTimeoutError after its output", { timeout: 60_000 }, async () => {
  const seen = [];
  const streaming = (async () => {
    for await (const event of act.stream(["sh", "-c", "echo started; sleep 100"], { timeoutMs: 1000 })) {
      seen.push(event.text);
    }
  })();
  await assert.rejects(streaming, (e) => e instanceof CommandTimeoutError && e.result.timedOut);
  assert.deepEqual(seen, ["started\n"]);
});

test("a rent as root finds no provider when none allows root", { timeout: 60_000 }, async () => {
  await assert.rejects(
    requestor.rent({ image: IMAGE, demand: SMALL, user: "root" }),
    (e) => e instanceof NoMatchError && e.code === "no_match",
  );
});

test("a rent as root runs as uid 0 on a provider that allows it; a plain rent there does not", { timeout: 120_000 }, async () => {
  const name = await cluster.startProvider("proot", { cpus: 1, memory: "1GiB", args: ["--allow-root"] });
  const root = await requestor.rent({ image: IMAGE, demand: SMALL, user: "root" });
  assert.equal(root.provider, name);
  assert.equal((await root.run(["id", "-u"])).stdout.trim(), "0");
  await root.release();
  const plain = await requestor.rent({ image: IMAGE, demand: SMALL, exclude: [act.provider] });
  assert.equal(plain.provider, name);
  assert.equal((await plain.run(["id", "-u"])).stdout.trim(), "65534");
  await plain.release();
});
