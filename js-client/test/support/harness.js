// Real things for the integration tests: a hub process on a free port, provider processes
// on the real Docker engine, the busybox image, a PostgreSQL server for several hubs. Everything
// started is stopped and every container a test provider made is removed in `stop()`.
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { connect } from "../../src/node/index.js";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const PYTHON = process.env.PYTHON ?? "python3";
export const IMAGE = "kiln-busybox:latest";
const START_TIMEOUT_MS = 30_000;

/** Build the test image unless it is there. */
export function ensureImage() {
  try {
    execFileSync("docker", ["image", "inspect", IMAGE], { stdio: "ignore" });
  } catch {
    execFileSync(PYTHON, ["-m", "kiln.cli", "image", "busybox"], { cwd: ROOT, stdio: "inherit" });
  }
}

/** Ids of the containers (running or not) labelled as made by provider `name`. */
export function containersOf(name) {
  const out = execFileSync("docker", ["ps", "-aq", "--filter", `label=kiln.provider=${name}`], { encoding: "utf8" });
  return out.split(/\s+/).filter(Boolean);
}

/** Running containers of provider `name`, with their CPU and memory limits. */
export function runningLimits(name) {
  const ids = execFileSync("docker", ["ps", "-q", "--filter", `label=kiln.provider=${name}`], { encoding: "utf8" })
    .split(/\s+/)
    .filter(Boolean);
  if (ids.length === 0) return [];
  // A container may be removed between the two calls: inspect reports it missing and
  // still prints the others.
  const inspected = spawnSync("docker", ["inspect", ...ids], { encoding: "utf8" });
  const data = JSON.parse(inspected.stdout || "[]");
  return data
    .filter((c) => c.State.Running)
    .map((c) => ({ cpus: c.HostConfig.NanoCpus / 1e9, memory: c.HostConfig.Memory }));
}

class Process {
  constructor(name, child) {
    this.name = name;
    this.child = child;
    this.log = "";
    this.exited = new Promise((resolve) => child.once("exit", resolve));
    const take = (data) => {
      this.log += data.toString();
      if (this.log.length > 200_000) this.log = this.log.slice(-100_000);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Send `signal` and wait (up to 10 s, then SIGKILL) for the process to end. */
  async kill(signal = "SIGTERM") {
    if (this.running) this.child.kill(signal);
    const ended = await Promise.race([this.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!ended) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Cluster {
  constructor() {
    this.suffix = randomBytes(3).toString("hex");
    this.url = "";
    /** @type {Process | null} */
    this.hub = null;
    /** @type {string | null} the hub's image store, removed in `stop()` */
    this.dataDir = null;
    /** @type {string | null} the providers' data folders (their records and volumes), removed in `stop()` */
    this.providersDir = null;
    /** @type {Map<string, Process>} */
    this.providers = new Map();
    /** @type {string | undefined} the PEM of the CA a wss:// hub's certificate is from: what the probes trust */
    this.ca = undefined;
    /** @type {string[] | undefined} what the hub was started with (for restartHub) */
    this.hubArgs = undefined;
  }

  _spawn(name, args) {
    const child = spawn(PYTHON, ["-m", "kiln.cli", ...args], {
      cwd: ROOT,
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return new Process(name, child);
  }

  /** Start a hub on a free loopback port, its image store in a fresh temporary folder unless `extra` names one. */
  async startHub(...extra) {
    if (!extra.includes("--data-dir")) {
      this.dataDir = mkdtempSync(join(tmpdir(), "kiln-hub-"));
      extra = [...extra, "--data-dir", this.dataDir];
    }
    this.hubArgs = extra;
    const port = extra.includes("--port") ? [] : ["--port", "0"];
    this.hub = this._spawn("hub", ["hub", "--host", "127.0.0.1", ...port, ...extra]);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const match = /listening on (wss?:\/\/\S+)/.exec(this.hub.log);
      if (match) {
        this.url = match[1];
        return this.url;
      }
      if (!this.hub.running) break;
      await sleep(50);
    }
    throw new Error(`the hub did not start:\n${this.hub.log}`);
  }

  /** Kill the hub with SIGKILL (as a crash) and start it again on the same port and data directory. */
  async restartHub() {
    await this.hub?.kill("SIGKILL");
    const args = (this.hubArgs ?? []).filter((_, i, all) => all[i] !== "--port" && all[i - 1] !== "--port");
    return this.startHub(...args, "--port", new URL(this.url).port);
  }

  /**
   * Start a provider named `${name}-${suffix}` (with `args` added to its command line) and
   * (by default) wait until it offers the image.
   */
  async startProvider(name, { cpus = 2, memory = "2GiB", wait = true, args: extra = [] } = {}) {
    const full = `${name}-${this.suffix}`;
    this.providersDir ??= mkdtempSync(join(tmpdir(), "kiln-providers-"));
    const args = ["provider", "--hub", this.url, "--name", full, "--cpus", String(cpus), "--memory", memory,
      "--data-dir", join(this.providersDir, full), ...extra];
    this.providers.set(full, this._spawn(full, args));
    if (wait) await this.waitForProviders([full]);
    return full;
  }

  async waitForProviders(names) {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const requestor = await connect(this.url, { name: "probe", ca: this.ca });
      try {
        const offers = new Map((await requestor.market()).map((p) => [p.name, p]));
        if (names.every((n) => offers.get(n)?.images.includes(IMAGE))) return;
      } finally {
        await requestor.close();
      }
      await sleep(100);
    }
    const logs = names.map((n) => this.providers.get(n)?.log ?? "").join("\n");
    throw new Error(`providers ${names} did not offer ${IMAGE} in time:\n${logs}`);
  }

  async stop() {
    await Promise.all([...this.providers.values()].map((p) => p.kill("SIGTERM")));
    if (this.hub !== null) await this.hub.kill("SIGTERM");
    if (this.dataDir !== null) rmSync(this.dataDir, { recursive: true, force: true });
    if (this.providersDir !== null) {
      // A provider killed outright leaves its containers' volumes mounted: detach them first.
      const mounted = readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((line) => line.split(" ")[4]);
      for (const point of mounted) {
        if (point?.startsWith(`${this.providersDir}/`)) execFileSync("umount", ["-l", point], { stdio: "ignore" });
      }
      rmSync(this.providersDir, { recursive: true, force: true });
    }
    for (const name of this.providers.keys()) {
      const ids = containersOf(name);
      try {
        if (ids.length > 0) execFileSync("docker", ["rm", "-f", ...ids], { stdio: "ignore" });
      } catch {
        // removed meanwhile by its provider's own cleanup
      }
    }
  }
}

/**
 * A CA made for the test with the `openssl` command, in `dir`: `ca` (its certificate), and
 * `cert` and `key` for a hub on 127.0.0.1 (subjectAltName IP:127.0.0.1) it signed.
 * @param {string} dir
 */
export function makeCertificates(dir) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Kiln JS test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  openssl("req", ...ec, "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=127.0.0.1");
  writeFileSync(join(dir, "hub.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n" +
    "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid,issuer\n");
  openssl("x509", "-req", "-in", "hub.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "hub.pem",
    "-days", "2", "-extfile", "hub.ext");
  return { ca: join(dir, "ca.pem"), cert: join(dir, "hub.pem"), key: join(dir, "hub.key") };
}

/** A started hub plus `providers` started providers; call `stop()` when done. */
export async function startCluster(providers = []) {
  ensureImage();
  const cluster = new Cluster();
  try {
    await cluster.startHub();
    const names = [];
    for (const p of providers) names.push(await cluster.startProvider(p.name, { ...p, wait: false }));
    if (names.length > 0) await cluster.waitForProviders(names);
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}

/**
 * A PostgreSQL server of the test's own (`python -m kiln.testing.postgres`: Debian's binaries, which
 * `make postgres` installs) on a free loopback port, in a fresh temporary folder: `url` is a fresh
 * database on it, what `kiln hub --db` takes. `stop()` closes the server's stdin, which stops it.
 */
export class Postgres {
  /** @param {Process} process @param {string} root @param {string} url */
  constructor(process, root, url) {
    this.process = process;
    this.root = root;
    this.url = url;
  }

  /** Start a server and wait (up to a minute) for the URL of its database. */
  static async start() {
    const root = mkdtempSync(join(tmpdir(), "kiln-postgres-"));
    const child = spawn(PYTHON, ["-m", "kiln.testing.postgres", root], {
      cwd: ROOT,
      env: { ...process.env, PYTHONUNBUFFERED: "1" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const server = new Process("postgres", child);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const match = /^(postgresql:\/\/\S+)\n/m.exec(server.log);
      if (match) return new Postgres(server, root, match[1]);
      if (!server.running) break;
      await sleep(50);
    }
    await server.kill("SIGTERM");
    rmSync(root, { recursive: true, force: true });
    throw new Error(`PostgreSQL did not start (make postgres installs it):\n${server.log}`);
  }

  async stop() {
    this.process.child.stdin?.end();
    const ended = await Promise.race([this.process.exited.then(() => true), sleep(15_000).then(() => false)]);
    if (!ended) await this.process.kill("SIGTERM");
    rmSync(this.root, { recursive: true, force: true });
  }
}

export { sleep };
