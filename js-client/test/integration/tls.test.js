// TLS end to end: a hub process serving wss:// with a certificate of a CA made for the test
// (openssl), a provider trusting that CA (--ca), the real Docker engine. With `ca` the
// client gets in and runs a command; without it, it refuses the hub and says why.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";

import { ConnectionLostError, UsageError, connect } from "../../src/node/index.js";
import { connect as browserConnect } from "../../src/browser.js";
import { Cluster, IMAGE, ensureImage, makeCertificates } from "../support/harness.js";

const dir = mkdtempSync(join(tmpdir(), "kiln-js-tls-"));
const files = makeCertificates(dir);
const ca = readFileSync(files.ca, "utf8");

/** @type {Cluster} */
let cluster;

before(async () => {
  ensureImage();
  cluster = new Cluster();
  cluster.ca = ca;
  await cluster.startHub("--tls-cert", files.cert, "--tls-key", files.key);
  await cluster.startProvider("tls", { args: ["--ca", files.ca] });
});
after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("the hub serves wss://; with the ca (text or bytes) a client rents and runs a command", { timeout: 60_000 }, async () => {
  assert.match(cluster.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
  const requestor = await connect(cluster.url, { ca });
  try {
    const act = await requestor.rent({ image: IMAGE, demand: { cpus: 0.5, memory: "64MiB" } });
    try {
      const r = await act.run(["echo", "over TLS"], { timeoutMs: 30_000 });
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, "over TLS\n");
    } finally {
      await act.release();
    }
  } finally {
    await requestor.close();
  }
  const bytes = await connect(cluster.url, { ca: new Uint8Array(readFileSync(files.ca)) });
  try {
    assert.equal((await bytes.market()).length, 1);
  } finally {
    await bytes.close();
  }
});

test("ca may be the path of the CA's PEM file, as Python's ssl= takes it", { timeout: 60_000 }, async () => {
  for (const path of [files.ca, pathToFileURL(files.ca), relative(process.cwd(), files.ca)]) {
    const requestor = await connect(cluster.url, { ca: path });
    try {
      assert.equal((await requestor.market()).length, 1, String(path));
    } finally {
      await requestor.close();
    }
  }
  // A path to another certificate, not the CA's: read, and the hub is refused as untrusted.
  await assert.rejects(connect(cluster.url, { ca: files.cert }), (e) => e instanceof ConnectionLostError && /not trusted/.test(e.message));
  const missing = join(dir, "absent.pem");
  await assert.rejects(
    connect(cluster.url, { ca: missing }),
    (e) => e instanceof UsageError && e.message === `cannot read the CA certificate ${missing}: no such file or directory`,
  );
  await assert.rejects(connect(cluster.url, { ca: dir }), (e) => e instanceof UsageError && e.message.startsWith(`cannot read the CA certificate ${dir}:`));
  await assert.rejects(
    connect(cluster.url, { ca: files.key }),
    (e) => e instanceof UsageError && e.message.startsWith(`${files.key} holds no PEM certificate`),
  );
});

test("without the ca the client refuses the hub: its certificate is not trusted", { timeout: 20_000 }, async () => {
  await assert.rejects(
    connect(cluster.url),
    (e) => e instanceof ConnectionLostError && /presented a certificate that is not trusted/.test(e.message) && /ca option/.test(e.message),
  );
  const self = readFileSync(files.cert, "utf8"); // a certificate, but not a CA's: nothing the hub's chain leads to
  await assert.rejects(connect(cluster.url, { ca: self }), (e) => e instanceof ConnectionLostError && /not trusted/.test(e.message));
  await assert.rejects(
    connect(cluster.url.replace("127.0.0.1", "localhost"), { ca }),
    (e) => e instanceof ConnectionLostError && /presented a certificate for another address/.test(e.message),
  );
});

test("a plain ws:// client of a TLS hub is told that the hub serves wss://", { timeout: 20_000 }, async () => {
  await assert.rejects(
    connect(cluster.url.replace("wss://", "ws://")),
    (e) => e instanceof ConnectionLostError && /cannot reach the hub at ws:.*a hub that serves TLS has a wss:\/\/ address/.test(e.message),
  );
});

test("ca is PEM (or a PEM file), for a wss:// hub, and Node only", { timeout: 5_000 }, async () => {
  await assert.rejects(connect(cluster.url.replace("wss://", "ws://"), { ca }), (e) => e instanceof UsageError && /for a wss:\/\/ hub/.test(e.message));
  // A string holding "-----BEGIN" is PEM text; any other string is a path.
  await assert.rejects(
    connect(cluster.url, { ca: "-----BEGIN GARBAGE-----" }),
    (e) => e instanceof UsageError && /^ca holds no PEM certificate/.test(e.message),
  );
  await assert.rejects(connect(cluster.url, { ca: "not a certificate" }), (e) => e instanceof UsageError && /cannot read the CA certificate not a certificate/.test(e.message));
  await assert.rejects(connect(cluster.url, { ca: /** @type {any} */ (42) }), UsageError);
  await assert.rejects(browserConnect(cluster.url, { ca }), (e) => e instanceof UsageError && /its own trust store/.test(e.message));
  await assert.rejects(browserConnect(cluster.url, { ca: files.ca }), (e) => e instanceof UsageError && /its own trust store/.test(e.message));
});
