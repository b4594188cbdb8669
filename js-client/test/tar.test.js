// The streaming tar reader and the safe folder extractor, on archives Python's tarfile
// writes (ustar, GNU and pax formats; long names; links) fed in awkward chunk sizes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, existsSync, lstatSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { TarReader, TarError } from "../src/tar.js";
import { extractFolder } from "../src/node/files.js";
import { TransferFailedError } from "../src/errors.js";
import { PYTHON } from "./harness.js";

/**
 * A tar archive made by Python: `entries` are [name, kind, data-or-linkname, mode?].
 * @returns {Buffer}
 */
function pythonTar(format, entries) {
  const script = `
import io, json, sys, tarfile
entries = json.loads(sys.argv[2])
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=getattr(tarfile, sys.argv[1])) as tar:
    for name, kind, value, mode in entries:
        info = tarfile.TarInfo(name)
        info.mode = mode
        if kind == "file":
            data = value.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = value
            tar.addfile(info)
sys.stdout.buffer.write(out.getvalue())
`;
  const withModes = entries.map(([n, k, v, m]) => [n, k, v ?? "", m ?? (k === "dir" ? 0o755 : 0o644)]);
  return execFileSync(PYTHON, ["-c", script, format, JSON.stringify(withModes)]);
}

/** Feed `archive` to a reader in chunks of `size` bytes; the entries with their content. */
function read(archive, size) {
  const reader = new TarReader();
  const entries = [];
  for (let at = 0; at < archive.length; at += size) {
    for (const event of reader.push(archive.subarray(at, at + size))) {
      if (event.type === "entry") entries.push({ ...event.entry, content: "" });
      else entries.at(-1).content += Buffer.from(event.bytes).toString();
    }
  }
  reader.end();
  return entries;
}

async function* chunksOf(buffer, size) {
  for (let at = 0; at < buffer.length; at += size) yield buffer.subarray(at, at + size);
}

const longName = `out/${"deep/".repeat(30)}${"n".repeat(120)}.txt`;
const big = "x".repeat(70_000);

for (const format of ["USTAR_FORMAT", "GNU_FORMAT", "PAX_FORMAT"]) {
  test(`reads ${format} archives whatever the chunk size`, () => {
    const entries = [
      ["out", "dir"],
      ["out/a.txt", "file", "hello"],
      ["out/empty", "file", ""],
      ["out/big", "file", big, 0o600],
      ["out/link", "symlink", "a.txt"],
    ];
    if (format !== "USTAR_FORMAT") entries.push([longName, "file", "long"]);
    const archive = pythonTar(format, entries);
    for (const size of [1, 7, 512, 513, 65536, archive.length]) {
      const got = read(archive, size);
      // Compared by length and a prefix to keep a failure message short.
      const summary = (name, kind, value) => [name.replace(/\/$/, ""), kind, value.length, value.slice(0, 20)];
      assert.deepEqual(
        got.map((e) => summary(e.name, e.kind, e.kind === "symlink" ? e.linkname : e.content)),
        entries.map(([n, k, v]) => summary(n, k, v ?? "")),
        `${format} in chunks of ${size}`,
      );
      assert.equal(got.find((e) => e.name === "out/big").mode, 0o600);
    }
  });
}

test("a damaged or cut archive is an error, not garbage", () => {
  const archive = pythonTar("PAX_FORMAT", [["out/a.txt", "file", "hello".repeat(400)]]);
  const bad = Buffer.from(archive);
  bad[10] ^= 0xff; // inside the name: the checksum no longer matches
  assert.throws(() => read(bad, 512), TarError);
  assert.throws(() => read(archive.subarray(0, 1500), 512), /ended in the middle/);
  assert.throws(() => read(archive.subarray(0, 2540), 512), /ended in the middle/); // in the padding
});

async function extract(archive, size = 1000) {
  const dest = join(mkdtempSync(join(tmpdir(), "kiln-tar-")), "dest");
  try {
    await extractFolder(chunksOf(archive, size), dest, "/golem/output");
    return { dest, error: null };
  } catch (error) {
    return { dest, error };
  }
}

test("a folder is extracted below dest without its own name", async () => {
  const archive = pythonTar("PAX_FORMAT", [
    ["output", "dir"],
    ["output/sub", "dir", "", 0o700],
    ["output/sub/y", "file", "y\n", 0o755],
    ["output/a.txt", "file", "hello"],
    ["output/rel", "symlink", "sub/y"],
    ["output/hard", "hardlink", "output/a.txt"],
    [`output/${"n".repeat(150)}`, "file", "long"],
  ]);
  const { dest, error } = await extract(archive, 333);
  assert.equal(error, null);
  assert.equal(readFileSync(join(dest, "a.txt"), "utf8"), "hello");
  assert.equal(readFileSync(join(dest, "sub/y"), "utf8"), "y\n");
  assert.equal(statSync(join(dest, "sub/y")).mode & 0o777, 0o755);
  assert.equal(readlinkSync(join(dest, "rel")), "sub/y");
  assert.equal(readFileSync(join(dest, "hard"), "utf8"), "hello");
  assert.equal(readFileSync(join(dest, "n".repeat(150)), "utf8"), "long");
  rmSync(dest, { recursive: true });
});

const unsafe = {
  "an absolute name": [["/etc/evil", "file", "x"]],
  "a '..' in a name": [["output/../../evil", "file", "x"]],
  "a link to an absolute path": [["output/evil", "symlink", "/etc/passwd"]],
  "a link climbing out": [["output/sub/evil", "symlink", "../../.."]],
  "a hard link to outside": [["output/evil", "hardlink", "../etc/passwd"]],
  "a device or fifo": [["output/fifo", "fifo", ""]],
  "a link through a link to '.'": [["output/l", "symlink", "."], ["output/esc", "symlink", "l/../secret"]],
  "a link that climbs and comes back": [["output/sub", "dir"], ["output/sub/back", "symlink", "../sub"]],
};

for (const [what, entries] of Object.entries(unsafe)) {
  test(`extraction refuses ${what}`, async () => {
    const { dest, error } = await extract(pythonTar("PAX_FORMAT", [["output", "dir"], ...entries]));
    assert.ok(error instanceof TransferFailedError, String(error));
    assert.equal(error.code, "transfer_failed");
    assert.match(error.message, /outside/);
    assert.ok(!existsSync(join(dest, "..", "evil")));
    assert.ok(!existsSync(join(dest, "evil")));
  });
}

test("extraction never writes through a link it made", async () => {
  // "sub" is a link to "." (inside: allowed); "sub/x" then lands in dest itself, not outside.
  const { dest, error } = await extract(
    pythonTar("PAX_FORMAT", [["output", "dir"], ["output/sub", "symlink", "."], ["output/sub/x", "file", "in"]]),
  );
  assert.equal(error, null);
  assert.ok(lstatSync(join(dest, "sub")).isSymbolicLink());
  assert.equal(readFileSync(join(dest, "x"), "utf8"), "in");
});
