// Images out of `docker save` archives (src/image.js, src/node/files.js' openArchive) and
// their push to a stand-in hub (requestor.pushImage, listImages, removeImage, rent's
// progress): archives of both layouts Docker writes, and broken ones, are built here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import {
  ImageCorruptError, ImageError, ImageNotFoundError, RemoteProtocolError, UnsupportedVersionError, UsageError,
} from "../../src/errors.js";
import { openArchive, openSource, saveDownload } from "../../src/node/files.js";
import { Requestor } from "../../src/requestor.js";
import { hex, sha, tar } from "../support/archives.js";
import { LIMITS, connected, tick } from "../support/fake_socket.js";


// Two layers (themselves tars, as Docker's are), the second of them twice.
const LAYER1 = tar([["bin/sh", "#!/bin/true\n".repeat(100)]]);
const LAYER2 = tar([["etc/motd", "hello\n"]]);
const DIFF_IDS = [sha(LAYER1), sha(LAYER2), sha(LAYER2)];
const CONFIG = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: DIFF_IDS } }));
const CONFIG_DIGEST = sha(CONFIG);

/** The archive `docker save` (before 25) writes: a folder per layer, a repeated layer a link to its first copy. */
function legacy({ manifest, config = CONFIG, extra = [] } = {}) {
  const index = manifest ?? [
    { Config: `${hex(CONFIG_DIGEST)}.json`, RepoTags: ["app:1"], Layers: ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"] },
  ];
  return tar([
    ["l1/", { type: "5", mode: 0o755 }],
    ["l1/VERSION", "1.0"],
    ["l1/layer.tar", LAYER1],
    ["l2/", { type: "5", mode: 0o755 }],
    ["l2/layer.tar", LAYER2],
    ["l3/", { type: "5", mode: 0o755 }],
    ["l3/layer.tar", { type: "2", linkname: "../l2/layer.tar" }],
    [`${hex(CONFIG_DIGEST)}.json`, config],
    ...extra,
    ["manifest.json", JSON.stringify(index)],
    ["repositories", "{}"],
  ]);
}

/** The archive `docker save` (25 and later) writes: an OCI layout, blobs by digest. */
function oci() {
  const blob = (digest) => `blobs/sha256/${hex(digest)}`;
  return tar([
    ["blobs/", { type: "5", mode: 0o755 }],
    ["blobs/sha256/", { type: "5", mode: 0o755 }],
    [blob(CONFIG_DIGEST), CONFIG],
    [blob(DIFF_IDS[0]), LAYER1],
    [blob(DIFF_IDS[1]), LAYER2],
    ["index.json", "{}"],
    ["manifest.json", JSON.stringify([{ Config: blob(CONFIG_DIGEST), RepoTags: null, Layers: [blob(DIFF_IDS[0]), blob(DIFF_IDS[1]), blob(DIFF_IDS[1])] }])],
    ["oci-layout", '{"imageLayoutVersion":"1.0.0"}'],
  ]);
}

const folder = mkdtempSync(join(tmpdir(), "kiln-image-"));
let files = 0;
/** `data` written to a fresh file; its path. */
function saved(data) {
  const path = join(folder, `archive-${files++}.tar`);
  writeFileSync(path, data);
  return path;
}

const EXPECTED = {
  config: { digest: CONFIG_DIGEST, size: CONFIG.length },
  layers: [
    { digest: DIFF_IDS[0], size: LAYER1.length },
    { digest: DIFF_IDS[1], size: LAYER2.length },
    { digest: DIFF_IDS[1], size: LAYER2.length },
  ],
};

/** All the bytes `archive.blobs()` gives, and the largest chunk. */
async function drain(archive, digests, chunkBytes) {
  const chunks = [];
  for await (const chunk of archive.blobs(digests, chunkBytes)) chunks.push(Buffer.from(chunk));
  return { data: Buffer.concat(chunks), largest: Math.max(...chunks.map((c) => c.length)) };
}

for (const [layout, make, tags] of [["legacy", legacy, ["app:1"]], ["OCI", oci, []]]) {
  test(`a ${layout} docker save archive: the manifest from the config's diff ids and the tar headers, blobs streamed`, { timeout: 10_000 }, async () => {
    const archive = await openArchive(saved(make()));
    try {
      assert.deepEqual(archive.manifest, EXPECTED);
      assert.deepEqual(archive.tags, tags);
      assert.equal(archive.digest, CONFIG_DIGEST);
      assert.equal(archive.size, CONFIG.length + LAYER1.length + LAYER2.length);
      const wanted = [CONFIG_DIGEST, DIFF_IDS[1], DIFF_IDS[0]];
      const { data, largest } = await drain(archive, wanted, 1000);
      assert.deepEqual(data, Buffer.concat([CONFIG, LAYER2, LAYER1]));
      assert.ok(largest <= 1000, `a chunk of ${largest} bytes`);
      assert.equal(archive.bytesOf(wanted), data.length);
      assert.throws(() => archive.bytesOf([sha("nothing")]), RemoteProtocolError);
    } finally {
      await archive.file.close();
    }
  });
}

test("what is not a docker save archive of one image is an ImageError", { timeout: 10_000 }, async () => {
  const layers = ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"];
  const config = `${hex(CONFIG_DIGEST)}.json`;
  const cases = {
    "not a tar": Buffer.from("hello, world\n".repeat(100)),
    "no manifest.json": tar([["a.txt", "x"]]),
    "manifest.json not JSON": tar([["manifest.json", "{nope"]]),
    "two images": legacy({ manifest: [{ Config: config, Layers: layers }, { Config: config, Layers: layers }] }),
    "no Config": legacy({ manifest: [{ Layers: layers }] }),
    "a layer missing": legacy({ manifest: [{ Config: config, Layers: ["l1/layer.tar", "l9/layer.tar", "l3/layer.tar"] }] }),
    "a config missing": legacy({ manifest: [{ Config: "nope.json", Layers: layers }] }),
    "a layer that is a folder": legacy({ manifest: [{ Config: config, Layers: ["l1", "l2/layer.tar", "l3/layer.tar"] }] }),
    "diff ids and layers disagree": legacy({ manifest: [{ Config: config, Layers: layers.slice(0, 2) }] }),
    "config not JSON": legacy({ config: "{" }),
    "config without diff ids": legacy({ config: JSON.stringify({ rootfs: {} }) }),
    "a diff id that is no digest": legacy({ config: JSON.stringify({ rootfs: { diff_ids: ["a", "b", "c"] } }) }),
    "an entry escaping": legacy({ extra: [["../evil", "x"]] }),
    "an absolute entry": legacy({ extra: [["/etc/evil", "x"]] }),
    "a layer named outside": legacy({ manifest: [{ Config: config, Layers: ["../l1/layer.tar", "l2/layer.tar", "l3/layer.tar"] }] }),
    "a link leading outside": legacy({
      manifest: [{ Config: config, Layers: ["l1/layer.tar", "l2/layer.tar", "out"] }],
      extra: [["out", { type: "2", linkname: "../../etc/passwd" }]],
    }),
    "a link in a loop": legacy({
      manifest: [{ Config: config, Layers: ["l1/layer.tar", "l2/layer.tar", "loop"] }],
      extra: [["loop", { type: "2", linkname: "loop" }]],
    }),
    "cut short": legacy().subarray(0, 3000),
  };
  for (const [name, data] of Object.entries(cases)) {
    await assert.rejects(openArchive(saved(data)), ImageError, name);
  }
});

test("a repeated layer may be a hard link too; ./ names are the same members", { timeout: 10_000 }, async () => {
  const data = tar([
    ["./l1/layer.tar", LAYER1],
    ["./l2/layer.tar", LAYER2],
    ["./l3/layer.tar", { type: "1", linkname: "./l2/layer.tar" }],
    ["./c.json", CONFIG],
    ["./manifest.json", JSON.stringify([{ Config: "c.json", RepoTags: ["a:1"], Layers: ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"] }])],
  ]);
  const archive = await openArchive(saved(data));
  assert.deepEqual(archive.manifest, EXPECTED);
  await archive.file.close();
});

test("an archive that changed after it was read fails its push with an ImageError, not short data", { timeout: 10_000 }, async () => {
  const path = saved(legacy());
  const archive = await openArchive(path);
  writeFileSync(path, legacy().subarray(0, 2048)); // truncated under it
  await assert.rejects(drain(archive, [DIFF_IDS[0]], 512), ImageError);
  await archive.file.close();
});

test("openArchive: a missing file is a FileNotFoundError, a wrong argument a UsageError", { timeout: 10_000 }, async () => {
  await assert.rejects(openArchive(join(folder, "absent.tar")), (e) => e.code === "file_not_found");
  await assert.rejects(openArchive(42), UsageError);
});

// --- the push, against a stand-in hub -------------------------------------------------------

const PLATFORM = { openSocket: () => assert.fail("no socket"), files: { open: openSource, save: saveDownload }, images: { open: openArchive } };

async function requestor(limits = LIMITS, version = "1.2") {
  const { socket, conn } = await connected(limits, version);
  return { socket, requestor: new Requestor(conn, PLATFORM) };
}

/** The first frame the client sends, once it has read its archive from disk. */
async function firstSent(socket) {
  for (let waited = 0; socket.sent.length === 0; waited += 5) {
    assert.ok(waited < 5000, "nothing was sent");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return socket.take()[0];
}

/** What the client sent once it had a moment to read from disk. */
async function settle(socket) {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 2));
  return socket.take();
}

const info = (tags) => ({
  digest: CONFIG_DIGEST, tags, size: CONFIG.length + LAYER1.length + LAYER2.length, layers: 3, arch: "amd64", os: "linux", pushed: 1,
});

test("a push: the manifest and tags, then exactly the blobs the hub wants, in its order, within its credit", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor({ ...LIMITS, chunk_bytes: 4096, max_window: 4 });
  const progress = [];
  const pushing = r.pushImage(saved(legacy()), { tags: ["app:latest", "app:1"], onProgress: (p) => progress.push(p) });
  const sent = await firstSent(socket);
  assert.deepEqual(sent, { type: "push_image", id: sent.id, manifest: EXPECTED, tags: ["app:1", "app:latest"] });
  const wanted = [CONFIG_DIGEST, DIFF_IDS[0]]; // the hub holds the second layer
  socket.receive({ type: "want", re: sent.id, blobs: wanted });
  await tick();
  assert.deepEqual(socket.take(), [], "no data before credit");
  const expected = Buffer.concat([CONFIG, LAYER1]);
  let received = Buffer.alloc(0);
  let ended = false;
  for (let round = 0; !ended; round++) {
    assert.ok(round < 100, "the push never ended");
    socket.receive({ type: "credit", stream: sent.id, chunks: 2 });
    const frames = await settle(socket);
    assert.ok(frames.length <= 3, `${frames.length} frames for 2 credits`);
    for (const f of frames) {
      if (f.startsWith("01")) ended = true;
      else received = Buffer.concat([received, Buffer.from(f.slice(16), "hex")]);
    }
    assert.ok(frames.filter((f) => f.startsWith("00")).length <= 2);
  }
  assert.deepEqual(received, expected);
  socket.receive({ type: "image_pushed", re: sent.id, image: info(["app:1", "app:latest"]), sent: expected.length, skipped: LAYER2.length });
  const pushed = await pushing;
  assert.deepEqual(
    { ...pushed, image: undefined },
    { digest: CONFIG_DIGEST, tags: ["app:1", "app:latest"], size: info([]).size, sentBytes: expected.length, skippedBytes: LAYER2.length, image: undefined },
  );
  assert.equal(pushed.image.arch, "amd64");
  assert.deepEqual([pushed.image.inUse, pushed.image.lastUsed], [0, null]);
  assert.ok(!("in_use" in pushed.image), "camelCase, as listImages gives it");
  assert.deepEqual(progress.at(0), { done: 0, total: expected.length });
  assert.deepEqual(progress.at(-1), { done: expected.length, total: expected.length });
});

test("a push of an image the hub holds: image_pushed at once, nothing sent", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor();
  const pushing = r.pushImage(saved(oci()));
  const sent = await firstSent(socket);
  assert.deepEqual(sent.tags, []);
  socket.receive({ type: "image_pushed", re: sent.id, image: info([]), sent: 0, skipped: info([]).size });
  assert.equal((await pushing).sentBytes, 0);
  await tick();
  assert.deepEqual(socket.take(), []);
});

test("a push the hub finds corrupt fails with ImageCorruptError and stops sending", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor({ ...LIMITS, chunk_bytes: 512, max_window: 2 });
  const pushing = r.pushImage(saved(legacy()));
  const sent = await firstSent(socket);
  socket.receive({ type: "want", re: sent.id, blobs: [DIFF_IDS[0]] });
  socket.receive({ type: "credit", stream: sent.id, chunks: 1 });
  for (let i = 0; i < 5; i++) await tick();
  socket.receive({ type: "error", re: sent.id, code: "image_corrupt", message: "sha256 mismatch" });
  await assert.rejects(pushing, ImageCorruptError);
  socket.take();
  socket.receive({ type: "credit", stream: sent.id, chunks: 2 });
  await tick();
  assert.deepEqual(socket.take(), []);
});

test("a push of what is no image, or to a hub of 1.0, or with a bad tag, sends nothing", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor();
  await assert.rejects(r.pushImage(saved(tar([["a", "b"]]))), ImageError);
  await assert.rejects(r.pushImage(saved(legacy()), { tags: ["Bad:Tag"] }), UsageError);
  assert.deepEqual(socket.take(), []);
  const old = await requestor(LIMITS, "1.0");
  await assert.rejects(old.requestor.pushImage(saved(legacy())), UnsupportedVersionError);
  await assert.rejects(old.requestor.listImages(), UnsupportedVersionError);
  await assert.rejects(old.requestor.removeImage("app:1"), UnsupportedVersionError);
  assert.deepEqual(old.socket.take(), []);
});

test("listImages and removeImage", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor();
  const listing = r.listImages();
  await tick();
  const [ask] = socket.take();
  assert.deepEqual(ask, { type: "list_images", id: ask.id });
  socket.receive({ type: "image_list", re: ask.id, images: [info(["app:1"])], used: 10, limit: 100 });
  const list = await listing;
  assert.equal(list.images[0].digest, CONFIG_DIGEST);
  assert.deepEqual([list.used, list.limit], [10, 100]);
  // The wire's snake_case named as the rest of the JS API, every field the declarations name.
  assert.deepEqual(list.images[0], {
    digest: CONFIG_DIGEST, tags: ["app:1"], size: info([]).size, layers: 3, arch: "amd64", os: "linux", pushed: 1,
    lastUsed: null, inUse: 0, providers: [], owners: [], shared: null, public: false,
  });
  const dts = readFileSync(new URL("../../types/generated/requestor.d.ts", import.meta.url), "utf8");
  const declared = /export type ImageInfo = \{([^}]*)\}/.exec(dts)[1];
  assert.deepEqual(Object.keys(list.images[0]).sort(), [...declared.matchAll(/^ +(\w+)\??:/gm)].map((m) => m[1]).sort());
  const removing = r.removeImage("app:1");
  await tick();
  const [remove] = socket.take();
  assert.deepEqual(remove, { type: "remove_image", id: remove.id, image: "app:1" });
  socket.receive({ type: "done", re: remove.id });
  await removing;
});

test("shareImage sends share_image (1.4); a hub of 1.3 has none, and a share of nobody is refused", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor(LIMITS, "1.4");
  const sharing = r.shareImage("app:1", { with: ["bob", "#7"] });
  await tick();
  const [share] = socket.take();
  assert.deepEqual(share, { type: "share_image", id: share.id, image: "app:1", to: ["bob", "#7"], public: false, revoke: false });
  socket.receive({ type: "done", re: share.id });
  await sharing;
  const revoking = r.shareImage(CONFIG_DIGEST, { public: true, revoke: true });
  await tick();
  const [revoke] = socket.take();
  assert.deepEqual([revoke.to, revoke.public, revoke.revoke], [[], true, true]);
  socket.receive({ type: "error", re: revoke.id, code: "image_not_found", message: "the hub stores no image" });
  await assert.rejects(revoking, ImageNotFoundError);
  await assert.rejects(r.shareImage("app:1", {}), UsageError);
  await assert.rejects(r.shareImage("app:1", { with: "bob" }), UsageError);
  assert.deepEqual(socket.take(), []);
  const old = await requestor(LIMITS, "1.3");
  await assert.rejects(old.requestor.shareImage("app:1", { public: true }), UnsupportedVersionError);
  assert.deepEqual(old.socket.take(), []);
});

test("a rent hears how far its image loads, and its activity says what was pulled", { timeout: 10_000 }, async () => {
  const { socket, requestor: r } = await requestor();
  const progress = [];
  const renting = r.rent({ image: "app:1", onProgress: (p) => progress.push(p) });
  await tick();
  const [rent] = socket.take();
  for (const done of [100, 200]) {
    socket.receive({ type: "rent_progress", re: rent.id, provider: "p1", image: CONFIG_DIGEST, done, total: 200 });
  }
  socket.receive({
    type: "rented", re: rent.id, activity: "a1", provider: "p1", cached: false, pulled: 200,
    resources: { cpus: 1, memory: 2 ** 28, storage: 0 },
  });
  const act = await renting;
  assert.deepEqual(progress, [
    { provider: "p1", image: CONFIG_DIGEST, done: 100, total: 200 },
    { provider: "p1", image: CONFIG_DIGEST, done: 200, total: 200 },
  ]);
  assert.equal(act.pulled, 200);
  assert.equal(act.cached, false);
  const plain = r.rent({ image: "app:1" });
  await tick();
  const [again] = socket.take();
  socket.receive({ type: "rent_progress", re: again.id, provider: "p1", image: "app:1", done: 1, total: 2 });
  socket.receive({
    type: "rented", re: again.id, activity: "a2", provider: "p1", cached: true, resources: { cpus: 1, memory: 2 ** 28, storage: 0 },
  });
  assert.equal((await plain).pulled, null);
});
