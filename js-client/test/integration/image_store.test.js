// End to end, protocol 1.1's image store: an image built here with Docker, saved, removed
// from Docker, pushed to a real hub, rented on a real provider that loads it from the hub,
// run, listed, removed. Also a push whose layer does not hash to its diff id.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { ImageCorruptError, ImageNotFoundError, connect } from "../../src/node/index.js";
import { hex, sha, tar } from "../support/archives.js";
import { IMAGE, containersOf, startCluster } from "../support/harness.js";

const SMALL = { cpus: 0.5, memory: "128MiB" };
const tmp = mkdtempSync(join(tmpdir(), "kiln-js-store-"));
const stamp = randomBytes(8).toString("hex");
const TAG = `kiln-e2e-${stamp}:1`;

/** @type {import("../support/harness.js").Cluster} */
let cluster;
let provider = "";
let archive = "";
let imageId = "";

/** Build an image of its own on the test image (a layer only it has), save it, then remove it from Docker. */
function buildAndSave() {
  const dockerfile = `FROM ${IMAGE}\nRUN echo ${stamp} > /stamp && head -c 300000 /dev/urandom > /noise\n`;
  execFileSync("docker", ["build", "-q", "-t", TAG, "-"], { input: dockerfile, stdio: ["pipe", "ignore", "inherit"] });
  imageId = execFileSync("docker", ["image", "inspect", "-f", "{{.Id}}", TAG], { encoding: "utf8" }).trim();
  const path = join(tmp, "image.tar");
  execFileSync("docker", ["save", "-o", path, TAG]);
  // The provider shares this Docker engine: it must not hold the image before the rent.
  execFileSync("docker", ["rmi", "-f", TAG], { stdio: "ignore" });
  return path;
}

before(async () => {
  archive = buildAndSave();
  cluster = await startCluster();
  provider = await cluster.startProvider("p1", {
    cpus: 2, memory: "2GiB", args: ["--image-cache", "1GiB", "--data-dir", join(tmp, "provider")],
  });
});

after(async () => {
  await cluster?.stop();
  // What the provider loaded for the rent, whatever became of the test.
  if (imageId !== "") spawnSync("docker", ["rmi", "-f", imageId], { stdio: "ignore" });
  rmSync(tmp, { recursive: true, force: true });
});

test("push an image, rent it on a provider that lacks it, run it, list and remove it", { timeout: 300_000 }, async () => {
  const requestor = await connect(cluster.url, { name: "js-store" });
  try {
    const progress = [];
    const pushed = await requestor.pushImage(archive, { tags: [`kiln-e2e-${stamp}:latest`], onProgress: (p) => progress.push(p) });
    assert.equal(pushed.digest, imageId);
    assert.deepEqual(pushed.tags.sort(), [TAG, `kiln-e2e-${stamp}:latest`].sort());
    assert.ok(pushed.sentBytes > 300_000, `sent ${pushed.sentBytes}`);
    assert.equal(pushed.sentBytes + pushed.skippedBytes, pushed.size);
    assert.deepEqual(progress.at(-1), { done: pushed.sentBytes, total: pushed.sentBytes });

    // The hub holds it whole now: a second push sends nothing.
    const again = await requestor.pushImage(archive);
    assert.deepEqual([again.digest, again.sentBytes, again.skippedBytes], [imageId, 0, pushed.size]);

    const { images, used, limit } = await requestor.listImages();
    const listed = images.find((i) => i.digest === imageId);
    assert.ok(listed !== undefined, JSON.stringify(images));
    assert.ok(listed.tags.includes(TAG));
    assert.deepEqual([listed.inUse, listed.lastUsed], [0, null], "camelCase fields, like the rest of the JS API");
    assert.ok(used >= pushed.size && limit >= used);

    const loading = [];
    const act = await requestor.rent({ image: TAG, demand: SMALL, onProgress: (p) => loading.push(p) });
    assert.equal(act.provider, provider);
    assert.equal(act.cached, false);
    assert.ok(act.pulled > 300_000, `pulled ${act.pulled}`);
    assert.ok(loading.length > 0 && loading.every((p) => p.provider === provider && p.done <= p.total));
    assert.equal((await act.run(["cat", "/stamp"])).stdout, `${stamp}\n`);
    await act.release();

    // By digest this time; the provider holds it now.
    const cached = await requestor.rent({ image: imageId, demand: SMALL });
    assert.equal(cached.cached, true);
    assert.equal((await cached.run(["cat", "/stamp"])).stdout, `${stamp}\n`);
    await cached.release();
    assert.deepEqual(containersOf(provider), []);

    await requestor.removeImage(TAG);
    assert.ok(!(await requestor.listImages()).images.some((i) => i.digest === imageId));
    await assert.rejects(requestor.removeImage(TAG), ImageNotFoundError);
  } finally {
    await requestor.close();
  }
});

test("a layer whose bytes do not hash to its diff id fails the push with ImageCorruptError", { timeout: 60_000 }, async () => {
  const layer = tar([["hello.txt", `hello ${stamp}\n`]]);
  const claimed = tar([["hello.txt", `other ${stamp}\n`]]);
  const config = Buffer.from(JSON.stringify({
    architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [sha(claimed)] },
  }));
  const path = join(tmp, "corrupt.tar");
  writeFileSync(path, tar([
    [`${hex(sha(config))}.json`, config],
    ["l1/layer.tar", layer],
    ["manifest.json", JSON.stringify([{ Config: `${hex(sha(config))}.json`, RepoTags: null, Layers: ["l1/layer.tar"] }])],
  ]));
  const requestor = await connect(cluster.url, { name: "js-store-corrupt" });
  try {
    await assert.rejects(requestor.pushImage(path), (e) => e instanceof ImageCorruptError && e.code === "image_corrupt");
    assert.ok(!(await requestor.listImages()).images.some((i) => i.digest === sha(config)));
  } finally {
    await requestor.close();
  }
});
