// Verified jobs against a real hub and simulated providers (kiln.testing, no Docker), one of
// which lies: every command it runs prints a wrong answer. `verify: new Redundant(2)` keeps
// its answers out of the results, reports a verdict against each of its losing runs, and
// says so in the summary (tests/service/test_verification.py does the same in Python). The
// hub counts those verdicts: the liar's reputation falls below the honest providers', and a
// rent with `strategy: "reputation"` passes it over.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

import { Job, Redundant, connect } from "../../src/node/index.js";
import { Cluster, IMAGE, PYTHON, ROOT, sleep } from "../support/harness.js";

const PROVIDERS = `
import asyncio, sys
from contextlib import AsyncExitStack
from kiln.testing.simulated import simulated_providers

async def main():
    async with AsyncExitStack() as stack:
        honest = await stack.enter_async_context(simulated_providers(sys.argv[1], 2, prefix="honest"))
        liar = await stack.enter_async_context(simulated_providers(sys.argv[1], 1, prefix="liar", lie=True))
        print(" ".join(honest + liar), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin

asyncio.run(main())
`;

let cluster;
let providers;
let names;

before(async () => {
  cluster = new Cluster();
  await cluster.startHub();
  providers = spawn(PYTHON, ["-c", PROVIDERS, cluster.url], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  names = await new Promise((resolve, reject) => {
    let out = "";
    providers.stdout.on("data", (data) => {
      out += data.toString();
      if (out.includes("\n")) resolve(out.trim().split(" "));
    });
    providers.once("exit", (code) => reject(new Error(`the simulated providers exited with ${code}`)));
  });
});

after(async () => {
  providers?.stdin.end();
  await Promise.race([new Promise((resolve) => providers?.once("exit", resolve)), sleep(5_000)]);
  providers?.kill("SIGKILL");
  await cluster?.stop();
});

/** Each provider's reputation as the market lists it. */
async function reputations(requestor) {
  return new Map((await requestor.market()).map((p) => [p.name, p.reputation]));
}

test("Redundant(2) catches a provider that lies: its answers are never results, each losing run is reported, its reputation falls and strategy 'reputation' stops choosing it", { timeout: 60_000 }, async () => {
  const liar = names.find((n) => n.startsWith("liar"));
  const honest = names.filter((n) => n.startsWith("honest"));
  const requestor = await connect(cluster.url);
  try {
    const before = await reputations(requestor);
    assert.ok(names.every((n) => Math.abs(before.get(n) - 0.5) < 0.01), "every provider starts neutral (0.5)");
    const verdicts = [];
    const reporting = {
      rent: (options) => requestor.rent(options),
      reconnected: () => requestor.reconnected(),
      onCost: (listener) => requestor.onCost(listener),
      reportVerdict: async (lost, agreed) => {
        verdicts.push([lost, agreed]);
        await requestor.reportVerdict(lost, agreed);
      },
    };
    const events = [];
    const worker = async (act, n) => [n, (await act.run(["echo", String(n)])).stdout];
    const job = new Job(reporting, worker, Array.from({ length: 12 }, (_, i) => i), {
      image: IMAGE, maxProviders: 3, verify: new Redundant(2), onEvent: (e) => events.push(e),
    });
    const results = await job.run();
    assert.deepEqual(results, Array.from({ length: 12 }, (_, n) => [n, ""]), "no result of the liar's is used");
    const s = job.summary;
    assert.deepEqual([s.succeeded, s.failed, s.verified], [12, 0, 12]);
    assert.deepEqual([...s.lostBy.keys()], [liar]);
    assert.ok(s.lostBy.get(liar) >= 1);
    assert.ok(s.failedProviders.has(liar), "two lost verdicts ban the liar");
    const on = new Map(events.filter((e) => e.kind === "rented").map((e) => [e.detail, e.provider]));
    assert.equal(verdicts.length, s.lostBy.get(liar));
    for (const [lost, agreed] of verdicts) {
      assert.equal(on.get(lost), liar, "every verdict names a run of the liar");
      assert.equal(agreed.length, 2);
      assert.ok(agreed.every((a) => honest.includes(on.get(a))), "against two honest runs");
    }
    assert.ok(events.filter((e) => e.kind === "task_disputed").every((e) => e.provider === liar));
    assert.deepEqual(requestor.activities, [], "everything the job rented is released");

    // The hub counted the verdicts: the liar fell, the honest ones rose.
    const after = await reputations(requestor);
    assert.ok(after.get(liar) < before.get(liar), `the liar's reputation fell: ${after.get(liar)}`);
    for (const name of honest) {
      assert.ok(after.get(name) > after.get(liar), `${name} (${after.get(name)}) above the liar (${after.get(liar)})`);
    }
    // The reputation strategy passes it over: rent after rent, and two at once in one group.
    for (let i = 0; i < 4; i++) {
      const act = await requestor.rent({ image: IMAGE, strategy: "reputation" });
      assert.ok(honest.includes(act.provider), `rent ${i} went to ${act.provider}`);
      await act.release();
    }
    const pair = await Promise.all([0, 1].map(() => requestor.rent({ image: IMAGE, strategy: "reputation", group: "best" })));
    assert.deepEqual(pair.map((a) => a.provider).sort(), [...honest].sort(), "the two best are the honest ones");
    await Promise.all(pair.map((a) => a.release()));
    const alone = await requestor.rent({ image: IMAGE, strategy: "reputation", allow: [liar, honest[0]] });
    assert.equal(alone.provider, honest[0], "between the liar and one honest provider, the honest one");
    await alone.release();
    await assert.rejects(
      requestor.rent({ image: IMAGE, allow: [liar], minReputation: before.get(liar) }),
      (e) => e.code === "no_match",
      "and minReputation at the neutral score keeps it out",
    );
    console.log(`# reputations before ${JSON.stringify(Object.fromEntries(before))}, after ${JSON.stringify(Object.fromEntries(after))}`);
  } finally {
    await requestor.close();
  }
});
