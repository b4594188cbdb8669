// End to end: a hub process, provider processes, the real Docker engine, real containers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, readFileSync, readdirSync, writeFileSync, existsSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocketServer } from "ws";
import { PROTOCOL_VERSION } from "../../src/protocol/generated/constants.js";

import {
  ActivityError,
  CancelledError,
  CommandFailedError,
  CommandTimeoutError,
  ConnectionLostError,
  FileNotFoundError,
  ImageNotFoundError,
  InvalidPathError,
  KilnError,
  LocalProtocolError,
  NoMatchError,
  ProviderLostError,
  TransferFailedError,
  UnauthorizedError,
  UnsupportedVersionError,
  connect,
  errorFromCode,
} from "../../src/node/index.js";
import { Cluster, IMAGE, PYTHON, ROOT, containersOf, sleep, startCluster } from "../support/harness.js";

const SMALL = { cpus: 0.5, memory: "128MiB" };
const tmp = mkdtempSync(join(tmpdir(), "kiln-js-"));

/** @type {Cluster} */
let cluster;
let provider = "";

before(async () => {
  cluster = await startCluster([{ name: "p1", cpus: 2, memory: "2GiB" }]);
  provider = [...cluster.providers.keys()][0];
});
after(() => cluster?.stop());

async function waitUntil(predicate, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await sleep(100);
  }
  assert.fail("condition not reached in time");
}

test("the three actions end to end", { timeout: 120_000 }, async () => {
  const local = join(tmp, "data.txt");
  writeFileSync(local, "one two three\nfour five\n");
  const requestor = await connect(cluster.url, { name: "js-e2e" });
  try {
    const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "256MiB" } });
    assert.equal(act.provider, provider);
    await act.sendBytes(new TextEncoder().encode("hello"), "/golem/input/a.txt");
    await act.sendFile(local, "/golem/input/data.txt");
    await act.sendJson({ n: 3 }, "/golem/input/deep/er/params.json");

    const r = await act.run(["sh", "-c", "wc -c < /golem/input/a.txt"], { timeoutMs: 30_000 });
    assert.deepEqual([r.exitCode, r.stdout.trim(), r.stderr, r.ok], [0, "5", "", true]);
    assert.equal((await act.run(["wc", "-w", "/golem/input/data.txt"])).stdout.split(/\s+/)[0], "5");
    const env = await act.run(["sh", "-c", "echo $GREETING $PWD; echo oops >&2; exit 7"], {
      env: { GREETING: "hi" },
      workdir: "/golem/input",
    });
    assert.deepEqual([env.exitCode, env.stdout, env.stderr, env.ok], [7, "hi /golem/input\n", "oops\n", false]);
    const failed = await act.run(["sh", "-c", "echo out; echo oops >&2; exit 7"], { check: true }).catch((e) => e);
    assert.ok(failed instanceof CommandFailedError && failed instanceof ActivityError, String(failed));
    assert.equal(failed.message, "'sh' exited with code 7: oops");
    assert.equal(failed.code, "command_failed");
    assert.deepEqual([failed.result.exitCode, failed.result.stdout], [7, "out\n"]);
    assert.ok((await act.run(["true"], { check: true })).ok);
    assert.ok([126, 127].includes((await act.run(["no-such-program"])).exitCode));
    const hung = await act.run(["sh", "-c", "echo started; sleep 100; echo never"], { timeoutMs: 1000 }).catch((e) => e);
    assert.ok(hung instanceof CommandTimeoutError && hung instanceof KilnError, String(hung));
    assert.equal(hung.code, "timeout");
    assert.equal(hung.result.timedOut, true);
    assert.equal(hung.result.stdout, "started\n");

    const script =
      "mkdir -p /golem/output/sub && cat /golem/input/a.txt /golem/input/data.txt > /golem/output/out.txt" +
      " && cat /golem/input/deep/er/params.json > /golem/output/result.json && echo x > /golem/output/sub/y";
    assert.ok((await act.run(["sh", "-c", script])).ok);
    const path = await act.downloadFile("/golem/output/out.txt", join(tmp, "out", "out.txt"));
    assert.equal(readFileSync(path, "utf8"), "hello" + readFileSync(local, "utf8"));
    assert.deepEqual(Buffer.from(await act.downloadBytes("/golem/output/out.txt")), readFileSync(path));
    assert.deepEqual(await act.downloadJson("/golem/output/result.json"), { n: 3 });
    const folder = await act.downloadFile("/golem/output", join(tmp, "folder"));
    assert.deepEqual(readdirSync(folder, { recursive: true }).sort(), ["out.txt", "result.json", "sub", "sub/y"]);
    assert.equal(readFileSync(join(folder, "sub", "y"), "utf8"), "x\n");

    await assert.rejects(act.downloadBytes("/golem/output/none"), (e) => e instanceof FileNotFoundError && /\/golem\/output\/none/.test(e.message));
    await assert.rejects(act.downloadBytes("/golem/output"), (e) => e instanceof FileNotFoundError && e.code === "not_a_file");
    await assert.rejects(act.sendFile(join(tmp, "absent"), "/golem/input/x"), FileNotFoundError);
    // The activity still works after every refusal.
    assert.equal((await act.run(["cat", "/golem/input/a.txt"])).stdout, "hello");
    await act.release();
    assert.ok(act.cpuSeconds === null || act.cpuSeconds >= 0);
    await act.release(); // twice is fine
    assert.deepEqual(containersOf(provider), []);
  } finally {
    await requestor.close();
  }
});

test("bad paths are refused before anything is sent, and the hub refuses them too", { timeout: 60_000 }, async () => {
  const requestor = await connect(cluster.url);
  try {
    const act = await requestor.rent({ image: IMAGE, demand: SMALL });
    const socket = requestor.connection.socket;
    const sent = [];
    const send = socket.send.bind(socket);
    socket.send = (data) => (sent.push(data), send(data));
    for (const bad of ["/golem/../etc/passwd", "relative/path", "/golem//input", "/golem/./x", "/a\0b"]) {
      await assert.rejects(act.sendBytes("x", bad), (e) => e instanceof InvalidPathError && e.code === "bad_path", bad);
      await assert.rejects(act.downloadBytes(bad), InvalidPathError, bad);
      await assert.rejects(act.downloadFile(bad, join(tmp, "x")), InvalidPathError, bad);
      await assert.rejects(act.sendFile(join(tmp, "data.txt"), bad), InvalidPathError, bad);
    }
    await assert.rejects(act.run(["ls"], { workdir: "relative" }), InvalidPathError);
    assert.deepEqual(sent, [], "nothing reached the wire");
    socket.send = send;
    // Past the client's own checks (written to the socket under an id the session never
    // used), the hub judges a bad path the same way: code bad_path, InvalidPathError here.
    const id = 999_999;
    const answer = new Promise((resolve) => {
      socket.addEventListener("message", ({ data }) => {
        const message = typeof data === "string" ? JSON.parse(data) : null;
        if (message?.re === id) resolve(message);
      });
    });
    socket.send(JSON.stringify({ type: "upload", id, activity: act.id, path: "/golem/../x", size: 1 }));
    const refusal = await answer;
    assert.ok(errorFromCode(refusal.code, refusal.message) instanceof InvalidPathError, JSON.stringify(refusal));
    assert.equal((await act.run(["true"])).exitCode, 0);
  } finally {
    await requestor.close();
  }
});

test("a folder download never writes outside its destination", { timeout: 60_000 }, async () => {
  const requestor = await connect(cluster.url);
  try {
    const act = await requestor.rent({ image: IMAGE, demand: SMALL });
    await act.run(["sh", "-c", "mkdir -p /golem/output && ln -s /etc/passwd /golem/output/evil"]);
    const dest = join(tmp, "dest");
    await assert.rejects(act.downloadFile("/golem/output", dest), (e) => e instanceof TransferFailedError && /outside/.test(e.message));
    assert.ok(!existsSync(join(tmp, "passwd")));
    assert.ok(!existsSync(join(dest, "evil")));
    assert.equal((await act.run(["true"])).exitCode, 0);
  } finally {
    await requestor.close();
  }
});

test("a large file streams both ways with bounded memory", { timeout: 180_000 }, async () => {
  const size = 96 * 2 ** 20;
  const local = join(tmp, "big.bin");
  const handle = await open(local, "w");
  for (let i = 0; i < size / 2 ** 20; i++) await handle.write(randomBytes(2 ** 20));
  await handle.close();
  const digest = async (path) => {
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(path)) hash.update(chunk);
    return hash.digest("hex");
  };
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 20);
  const before = process.memoryUsage().arrayBuffers;
  const requestor = await connect(cluster.url);
  try {
    const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "512MiB" } });
    await act.sendFile(local, "/golem/input/big.bin");
    const remote = await act.run(["sha256sum", "/golem/input/big.bin"]);
    assert.equal(remote.stdout.split(" ")[0], await digest(local));
    const back = await act.downloadFile("/golem/input/big.bin", join(tmp, "back.bin"));
    assert.equal(statSync(back).size, size);
    assert.equal(await digest(back), await digest(local));
  } finally {
    clearInterval(sampler);
    await requestor.close();
  }
  // Credit bounds what is in flight (32 chunks of 256 KiB each way, plus socket buffers).
  assert.ok(peak - before < 48 * 2 ** 20, `array buffers peaked ${((peak - before) / 2 ** 20).toFixed(1)} MiB above the start`);
});

test("an AbortSignal cancels a run: the command is killed", { timeout: 60_000 }, async () => {
  const requestor = await connect(cluster.url);
  try {
    const act = await requestor.rent({ image: IMAGE, demand: SMALL });
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(new Error("user gave up")), 500);
    const error = await act.run(["sh", "-c", "sleep 60 && touch /tmp/finished"], { signal: controller.signal }).catch((e) => e);
    assert.ok(error instanceof CancelledError && error.code === "cancelled", String(error));
    assert.equal(error.cause.message, "user gave up");
    assert.ok(Date.now() - started < 5000);
    await waitUntil(async () => !(await act.run(["ps"])).stdout.includes("sleep 60"));
    // An already-aborted signal sends nothing.
    await assert.rejects(act.run(["true"], { signal: AbortSignal.abort() }), CancelledError);
    assert.equal((await act.run(["echo", "ok"])).stdout, "ok\n");
  } finally {
    await requestor.close();
  }
});

test("an AbortSignal cancels a rent and the container is not kept", { timeout: 60_000 }, async () => {
  const requestor = await connect(cluster.url);
  try {
    for (const delay of [0, 50, 150, 400]) {
      const controller = new AbortController();
      const renting = requestor.rent({ image: IMAGE, demand: SMALL, signal: controller.signal });
      setTimeout(() => controller.abort(), delay);
      const outcome = await renting.catch((e) => e);
      if (outcome instanceof CancelledError) continue;
      assert.ok(!(outcome instanceof Error), String(outcome));
      await outcome.release(); // it was rented before the abort: fine, release it
    }
    assert.equal(requestor.activities.length, 0);
    await waitUntil(async () => {
      const [offer] = await requestor.market();
      return containersOf(provider).length === 0 && offer.activities === 0 && offer.free.cpus === offer.offered.cpus;
    });
  } finally {
    await requestor.close();
  }
});

test("failures carry stable codes", { timeout: 60_000 }, async () => {
  const requestor = await connect(cluster.url);
  try {
    await assert.rejects(requestor.rent({ image: IMAGE, demand: { cpus: 64 } }), (e) => e instanceof NoMatchError && e.code === "no_match" && /64 CPUs/.test(e.message));
    await assert.rejects(requestor.rent({ image: IMAGE, demand: { memory: "64GiB" } }), NoMatchError);
    await assert.rejects(
      requestor.rent({ image: "no-such-image:1", demand: SMALL }),
      (e) => e instanceof ImageNotFoundError && e.code === "image_not_found" && e.provider === provider &&
        // What the requestor can do, not only what the provider's operator could (--pull).
        /push it there \(kiln image push no-such-image:1, or push_image \/ pushImage in code\)/.test(e.message) &&
        /--pull/.test(e.message),
    );
  } finally {
    await requestor.close();
  }
  await assert.rejects(connect("ws://127.0.0.1:1"), (e) => e instanceof ConnectionLostError && e.code === "connection_closed");
});

test("the market lists the providers that match its filters", { timeout: 30_000 }, async () => {
  const requestor = await connect(cluster.url);
  try {
    const names = async (options) => (await requestor.market(options)).map((p) => p.name);
    assert.ok((await names()).includes(provider));
    assert.ok((await names({ image: IMAGE, free: { cpus: 1, memory: "256MiB" }, limit: 1000 })).includes(provider));
    assert.deepEqual(await names({ image: "no-such-image:1" }), []);
    assert.deepEqual(await names({ free: { cpus: 64 } }), []);
    assert.deepEqual(await names({ labels: { zone: "nowhere" } }), []);
    assert.equal((await names({ limit: 1 })).length, 1);
    await assert.rejects(requestor.market({ limit: 0 }), (e) => e instanceof LocalProtocolError && e.code === "bad_message");
  } finally {
    await requestor.close();
  }
});

test("a provider lost mid-command is reported within seconds", { timeout: 90_000 }, async () => {
  const name = await cluster.startProvider("doomed", { cpus: 1, memory: "1GiB" });
  const requestor = await connect(cluster.url);
  try {
    const act = await requestor.rent({ image: IMAGE, demand: { cpus: 1, memory: "512MiB" }, exclude: [provider] });
    assert.equal(act.provider, name);
    const running = act.run(["sleep", "60"]).catch((e) => e);
    await sleep(500);
    const killedAt = Date.now();
    await cluster.providers.get(name).kill("SIGKILL");
    const error = await running;
    assert.ok(error instanceof ProviderLostError && error.code === "provider_lost", String(error));
    assert.ok(Date.now() - killedAt < 5000);
    assert.ok(act.lost instanceof ProviderLostError);
    await assert.rejects(act.run(["true"]), ProviderLostError);
    await act.release(); // nothing to release: no error
  } finally {
    await requestor.close();
  }
});

test("a hub with a token refuses a requestor without it", { timeout: 60_000 }, async () => {
  const guarded = new Cluster();
  try {
    await guarded.startHub("--token", "s3cret");
    await assert.rejects(connect(guarded.url), (e) => e instanceof UnauthorizedError && e.code === "unauthorized");
    const requestor = await connect(guarded.url, { token: "s3cret" });
    assert.deepEqual(await requestor.market(), []);
    await requestor.close();
  } finally {
    await guarded.stop();
  }
});

test("an admin token lists every requestor's activities and touches none of them", { timeout: 90_000 }, async () => {
  const guarded = await startCluster([{ name: "adm", cpus: 2, memory: "1GiB" }]);
  /** A credential made with the CLI while the hub runs: from now on every hello needs one. */
  const token = (role) =>
    execFileSync(PYTHON, ["-m", "kiln.cli", "token", "create", "--role", role, "--data-dir", guarded.dataDir],
      { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim().split("\n").pop();
  const opened = [];
  try {
    const [adminToken, aliceToken] = [token("admin"), token("requestor")];
    const alice = await connect(guarded.url, { token: aliceToken, name: "alice" });
    opened.push(alice);
    const admin = await connect(guarded.url, { token: adminToken, name: "ops" });
    opened.push(admin);
    const hers = await alice.rent({ image: IMAGE, demand: SMALL, group: "job-1" });
    const mine = await admin.rent({ image: IMAGE, demand: SMALL });

    assert.deepEqual((await alice.listActivities()).map((a) => a.id), [hers.id]);
    await assert.rejects(alice.listActivities({ all: true }), (e) => e instanceof UnauthorizedError && e.code === "unauthorized");
    const every = await admin.listActivities({ all: true });
    assert.deepEqual(every.map((a) => a.id), [hers.id, mine.id].sort());
    const listed = every.find((a) => a.id === hers.id);
    assert.deepEqual([listed.requestor, listed.provider, listed.state, listed.group, listed.image],
      ["alice", hers.provider, "ready", "job-1", IMAGE]);
    assert.equal(listed.resources.memory, 128 * 2 ** 20);
    assert.ok(listed.started > 0);
    assert.deepEqual((await admin.listActivities({ all: true, limit: 1 })).length, 1);

    // Seen, not touched: another's activity is unknown to the admin's connection.
    const conn = admin.connection;
    await assert.rejects(conn.request({ type: "release", id: conn.newId(), activity: hers.id }),
      (e) => e instanceof KilnError && e.code === "unknown_activity");
    assert.equal((await hers.run(["echo", "still mine"])).stdout, "still mine\n");
  } finally {
    for (const requestor of opened) await requestor.close();
    await guarded.stop();
  }
});

/** A stand-in hub that answers the handshake wrongly, for the refusals below. */
async function fakeHub(handleProtocols, onHello) {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols });
  server.on("connection", (ws) => ws.on("message", (data) => onHello(ws, JSON.parse(data.toString()))));
  await new Promise((resolve) => server.once("listening", resolve));
  return { url: `ws://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

const welcome = (version) =>
  JSON.stringify({
    type: "welcome", version, session: "r1", software: "fake",
    limits: { max_message_bytes: 1, max_frame_bytes: 1, chunk_bytes: 1, max_window: 1, max_pending: 1, max_streams: 1, max_output_bytes: 1 },
  });

test("the client refuses a hub of another protocol version", { timeout: 30_000 }, async () => {
  const v2 = await fakeHub(() => "kiln.v1", (ws, hello) => {
    assert.equal(hello.version, PROTOCOL_VERSION);
    ws.send(welcome("2.0"));
  });
  const otherProtocol = await fakeHub(() => "kiln.v2", (ws) => ws.send(welcome("1.0")));
  const laterMinor = await fakeHub(() => "kiln.v1", (ws) => ws.send(welcome("1.9")));
  try {
    await assert.rejects(connect(v2.url), (e) => e instanceof UnsupportedVersionError && e.code === "unsupported_version" && /2\.0/.test(e.message));
    await assert.rejects(connect(otherProtocol.url), (e) => e instanceof UnsupportedVersionError && /kiln\.v1/.test(e.message));
    const ok = await connect(laterMinor.url);
    await ok.close();
  } finally {
    await Promise.all([v2.close(), otherProtocol.close(), laterMinor.close()]);
  }
});
