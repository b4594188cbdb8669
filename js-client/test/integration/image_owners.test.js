// Protocol 1.4's owners, from JavaScript: a real hub process whose credentials `kiln token create`
// made, two requestors with their own tokens, a made-up image pushed by one (no Docker needed).
// The other cannot see it until `shareImage` shares it, cannot remove or share it then, and
// cannot see it again once the share is revoked: as the Python SDK (tests/hostile/test_tenant_store.py).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { ImageNotFoundError, UnauthorizedError, UsageError, connect } from "../../src/node/index.js";
import { hex, sha, tar } from "../support/archives.js";
import { Cluster, PYTHON, ROOT } from "../support/harness.js";

const tmp = mkdtempSync(join(tmpdir(), "kiln-js-owners-"));
const dataDir = join(tmp, "hub");
const TAG = `kiln-owned-${randomBytes(4).toString("hex")}:1`;

/** @type {Cluster} */
let cluster;
/** @type {Record<string, string>} */
const tokens = {};
let archive = "";
let digest = "";

/** `kiln token create` for a requestor credential named `name`: its token. */
function credential(name) {
  const out = execFileSync(PYTHON, ["-m", "kiln.cli", "token", "create", "--role", "requestor", "--name", name,
    "--data-dir", dataDir], { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  return out.trim();
}

/** A `docker save` archive of a made-up image of one layer, tagged TAG. */
function madeUpImage() {
  const layer = tar([["owner.txt", `alice ${randomBytes(8).toString("hex")}\n`]]);
  const config = Buffer.from(JSON.stringify({
    architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [sha(layer)] },
  }));
  digest = sha(config);
  const path = join(tmp, "image.tar");
  writeFileSync(path, tar([
    [`${hex(digest)}.json`, config],
    ["l1/layer.tar", layer],
    ["manifest.json", JSON.stringify([{ Config: `${hex(digest)}.json`, RepoTags: [TAG], Layers: ["l1/layer.tar"] }])],
  ]));
  return path;
}

before(async () => {
  for (const name of ["alice", "bob"]) tokens[name] = credential(name);
  archive = madeUpImage();
  cluster = new Cluster();
  await cluster.startHub("--data-dir", dataDir);
});

after(async () => {
  await cluster?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test("an image is its pusher's until shareImage shares it, and revoke takes it back", { timeout: 60_000 }, async () => {
  const alice = await connect(cluster.url, { name: "alice", token: tokens.alice });
  const bob = await connect(cluster.url, { name: "bob", token: tokens.bob });
  try {
    const pushed = await alice.pushImage(archive);
    assert.deepEqual([pushed.digest, pushed.image.owners, pushed.image.shared, pushed.image.public],
      [digest, ["alice"], [], false]);
    assert.deepEqual((await bob.listImages()).images, []);
    for (const ref of [TAG, digest]) {
      await assert.rejects(bob.shareImage(ref, { with: ["bob"] }), ImageNotFoundError);
      await assert.rejects(bob.removeImage(ref), ImageNotFoundError);
    }
    await assert.rejects(alice.shareImage(TAG, {}), UsageError);
    await assert.rejects(alice.shareImage(TAG, { with: ["nobody"] }), (e) => e instanceof UsageError
      && e.code === "bad_message" && e.message.includes("no live requestor credential is named 'nobody'"));

    await alice.shareImage(TAG, { with: ["bob"] });
    const [seen] = (await bob.listImages()).images;
    assert.deepEqual([seen.digest, seen.tags, seen.owners, seen.shared, seen.public], [digest, [], ["alice"], null, false]);
    const [own] = (await alice.listImages()).images;
    assert.deepEqual([own.tags, own.shared], [[TAG], ["bob"]]);
    await assert.rejects(bob.removeImage(digest), UnauthorizedError);
    await assert.rejects(bob.shareImage(digest, { public: true }), UnauthorizedError);

    await alice.shareImage(digest, { with: ["bob"], revoke: true });
    assert.deepEqual((await bob.listImages()).images, []);
    await alice.shareImage(TAG, { public: true });
    assert.equal((await bob.listImages()).images[0].public, true);
    await alice.removeImage(TAG);
    assert.deepEqual((await bob.listImages()).images, []);
  } finally {
    await alice.close();
    await bob.close();
  }
});
