// The streaming tar reader and the safe folder extractor, on archives Python's tarfile
// writes (ustar, GNU and pax formats; long names; links) and on crafted ones made here by
// hand, fed in awkward chunk sizes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, existsSync, lstatSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { TarReader, TarError } from "../../src/tar.js";
import { extractFolder } from "../../src/node/files.js";
import { TransferFailedError, UsageError } from "../../src/errors.js";
import { PYTHON } from "../support/harness.js";

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

/**
 * One tar entry made by hand: a ustar header and its content, padded to whole blocks.
 * `type` is the raw type flag ("0" file, "5" folder, "2" symlink, "1" hard link, "3", "4"
 * and "6" devices and FIFOs, "x" a pax header whose `data` is its records).
 */
function tarEntry({ name = "", type = "0", data = "", linkname = "", mode = 0o644 }) {
  const content = Buffer.from(data);
  const header = Buffer.alloc(512);
  const octal = (at, width, value) => header.write(`${value.toString(8).padStart(width - 1, "0")}\0`, at, "latin1");
  header.write(name, 0, 100);
  octal(100, 8, mode);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, content.length);
  octal(136, 12, 0);
  header.write(type, 156, "latin1");
  header.write(linkname, 157, 100);
  header.write("ustar\x0000", 257, "latin1");
  header.fill(" ", 148, 156);
  const sum = header.reduce((total, byte) => total + byte, 0);
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return Buffer.concat([header, content, Buffer.alloc((512 - (content.length % 512)) % 512)]);
}

/** A pax header setting `key` (e.g. a name longer than the header holds) for the entry after it. */
function pax(key, value) {
  const body = ` ${key}=${value}\n`;
  let length = body.length;
  while (String(length).length + body.length !== length) length += 1;
  return { type: "x", data: `${length}${body}` };
}

/** A whole archive of hand-made entries, ended by its two zero blocks. */
const craft = (...entries) => Buffer.concat([...entries.map(tarEntry), Buffer.alloc(1024)]);

/** Extract `archive` in chunks of every size in `sizes`; the destinations and errors. */
async function extractEach(archive, sizes = [1, 7, 511]) {
  const results = [];
  for (const size of sizes) results.push({ size, ...(await extract(archive, size)) });
  return results;
}

/** The destination's parent holds only the destination: nothing was written beside it. */
function nothingOutside(dest) {
  assert.deepEqual(readdirSync(join(dest, "..")), ["dest"]);
}

const crafted = {
  "a file, then a folder of the same name, then a file inside it": [
    craft({ name: "output/x", data: "1" }, { name: "output/x", type: "5" }, { name: "output/x/y", data: "2" }),
    /cannot extract output\/x into .*: EEXIST/,
  ],
  "a folder, then a file of the same name": [
    craft({ name: "output/x", type: "5" }, { name: "output/x", data: "1" }),
    /cannot extract output\/x into .*: EISDIR/,
  ],
  "a symlink to itself, then a file through it": [
    craft({ name: "output/a", type: "2", linkname: "a" }, { name: "output/a/x", data: "1" }),
    /cannot extract output\/a\/x into .*: ELOOP/,
  ],
  "symlinks in a loop, then a file through them": [
    craft({ name: "output/a", type: "2", linkname: "b" }, { name: "output/b", type: "2", linkname: "a" }, { name: "output/a/x", data: "1" }),
    /cannot extract output\/a\/x into .*: ELOOP/,
  ],
  "a dangling symlink, then a file through it": [
    craft({ name: "output/a", type: "2", linkname: "missing/deeper" }, { name: "output/a/x", data: "1" }),
    /cannot extract output\/a\/x into /,
  ],
  "a hard link to an entry that does not exist": [
    craft({ name: "output/h", type: "1", linkname: "output/missing" }),
    /output\/h is a hard link to output\/missing, which the archive did not hold before it/,
  ],
  "a hard link to an entry that comes later": [
    craft({ name: "output/h", type: "1", linkname: "output/later" }, { name: "output/later", data: "1" }),
    /output\/h is a hard link to output\/later, which the archive did not hold before it/,
  ],
  "a hard link to a folder": [
    craft({ name: "output/d", type: "5" }, { name: "output/h", type: "1", linkname: "output/d" }),
    /cannot extract output\/h into .*: EPERM/,
  ],
  "a hard link climbing out": [
    craft({ name: "output/h", type: "1", linkname: "output/../../etc/passwd" }),
    /refused to write outside .*holds '\.\.'/,
  ],
  "a symlink to a name holding NUL": [
    craft(pax("linkpath", "a\0b"), { name: "output/l", type: "2" }),
    /refused to write outside .*bad character/,
  ],
  "a name holding NUL": [craft(pax("path", "output/a\0b"), { name: "x", data: "1" }), /refused to write outside .*bad character/],
  "an absolute name": [craft({ name: "/tmp/evil", data: "1" }), /refused to write outside .*absolute path/],
  "a character device": [craft({ name: "output/tty", type: "3" }), /refused to write outside .*special file \(type '3'\)/],
  "a block device": [craft({ name: "output/sda", type: "4" }), /refused to write outside .*special file \(type '4'\)/],
  "a FIFO": [craft({ name: "output/fifo", type: "6" }), /refused to write outside .*special file \(type '6'\)/],
  "a name longer than a file name can be": [
    craft(pax("path", `output/${"n".repeat(300)}`), { name: "x", data: "1" }),
    /cannot extract output\/n+ into .*: ENAMETOOLONG/,
  ],
  "a path longer than a path can be": [
    craft(pax("path", `output/${`${"d".repeat(200)}/`.repeat(25)}f`), { name: "x", data: "1" }),
    /cannot extract output\/d+.* into .*: ENAMETOOLONG/,
  ],
  "an archive cut inside a header": [craft({ name: "output/a", data: "hello" }).subarray(0, 300), /damaged: .*ended in the middle/],
  "an archive cut inside a file's data": [
    craft({ name: "output/a", data: "x".repeat(2000) }).subarray(0, 1500),
    /damaged: .*ended in the middle/,
  ],
  "garbage": [Buffer.alloc(4096, "not a tar archive "), /damaged: bad octal number/],
  "a pax record of a wrong length": [craft({ type: "x", data: "99 path=x\n" }, { name: "output/a" }), /damaged: bad pax extended header record/],
};

for (const [what, [archive, message]] of Object.entries(crafted)) {
  test(`a crafted archive with ${what} is a TransferFailedError`, async () => {
    for (const { size, dest, error } of await extractEach(archive)) {
      assert.ok(error instanceof TransferFailedError, `in chunks of ${size}: ${error}`);
      assert.match(error.message, message, `in chunks of ${size}`);
      nothingOutside(dest);
    }
  });
}

test("an entry twice: the later one replaces the earlier", async () => {
  const archive = craft(
    { name: "output/d", type: "5" },
    { name: "output/d", type: "5", mode: 0o700 },
    { name: "output/d/x", data: "first" },
    { name: "output/d/x", data: "second" },
    { name: "output/l", type: "2", linkname: "d" },
    { name: "output/l", type: "2", linkname: "d/x" },
  );
  for (const { size, dest, error } of await extractEach(archive)) {
    assert.equal(error, null, `in chunks of ${size}`);
    assert.equal(readFileSync(join(dest, "d/x"), "utf8"), "second");
    assert.equal(readlinkSync(join(dest, "l")), "d/x");
    nothingOutside(dest);
  }
});

test("a file replaces a link of its name and never writes through it", async () => {
  const archive = craft(
    { name: "output/a.txt", data: "A" },
    { name: "output/sym", type: "2", linkname: "a.txt" },
    { name: "output/hard", type: "1", linkname: "output/a.txt" },
    { name: "output/sym", data: "S" },
    { name: "output/hard", data: "H" },
  );
  for (const { size, dest, error } of await extractEach(archive)) {
    assert.equal(error, null, `in chunks of ${size}`);
    assert.equal(readFileSync(join(dest, "a.txt"), "utf8"), "A", "the linked file is untouched");
    assert.ok(lstatSync(join(dest, "sym")).isFile());
    assert.equal(readFileSync(join(dest, "sym"), "utf8"), "S");
    assert.equal(readFileSync(join(dest, "hard"), "utf8"), "H");
    nothingOutside(dest);
  }
});

test("a destination that is a file is the caller's UsageError", async () => {
  const dest = join(mkdtempSync(join(tmpdir(), "kiln-tar-")), "dest");
  writeFileSync(dest, "a file");
  await assert.rejects(
    extractFolder(chunksOf(craft({ name: "output/a", data: "1" }), 100), dest, "/golem/output"),
    (e) => e instanceof UsageError && /cannot write into/.test(e.message),
  );
});
