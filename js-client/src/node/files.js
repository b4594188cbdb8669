/**
 * Node's side of file transfers: read a local file in chunks for `sendFile`, write a
 * download to disk for `downloadFile`, extracting a folder's tar stream safely.
 *
 * Nothing is read or written whole: each chunk is written (and awaited) before the next
 * is taken, so the download's credit, not the disk's speed, bounds what is in memory.
 * @module
 */

import { open, mkdir, rename, rm, chmod, realpath, lstat, unlink, symlink, link } from "node:fs/promises";
import { basename, dirname, join, resolve, relative, sep, isAbsolute, posix } from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

import { FileNotFoundError, TransferFailedError, UsageError } from "../errors.js";
import { TarError, TarReader } from "../tar.js";

const READ_BYTES = 256 * 1024;

/**
 * Open the local file `local` for streaming.
 * @param {string | URL} local
 * @returns {Promise<import("../activity.js").Source>}
 */
export async function openSource(local) {
  if (typeof local !== "string" && !(local instanceof URL)) {
    throw new UsageError("sendFile takes a local file path (string or file: URL) in Node.js");
  }
  let handle;
  try {
    handle = await open(local, "r");
  } catch (e) {
    throw new FileNotFoundError(`cannot read local file ${local}: ${/** @type {Error} */ (e).message}`, { cause: e });
  }
  const stat = await handle.stat();
  if (!stat.isFile()) {
    await handle.close();
    throw new FileNotFoundError(`${local} is not a regular file`);
  }
  const file = handle;
  return {
    size: stat.size,
    mode: stat.mode & 0o777,
    chunks: (async function* () {
      for (;;) {
        // A fresh buffer each time: the one sent is still queued in the socket.
        const buffer = new Uint8Array(READ_BYTES);
        const { bytesRead } = await file.read(buffer, 0, READ_BYTES, null);
        if (bytesRead === 0) return;
        yield buffer.subarray(0, bytesRead);
      }
    })(),
    close: () => file.close(),
  };
}

/**
 * Write a download to the local `dest`: a file through a temporary file beside it, then
 * renamed (a failed transfer leaves nothing behind), a folder extracted into `dest`.
 * @param {import("../../types/protocol.js").DownloadInfo} info
 * @param {AsyncIterable<Uint8Array>} chunks
 * @param {string | URL} dest
 * @param {string} path the container path, for messages
 * @returns {Promise<string>} the absolute local path written
 */
export async function saveDownload(info, chunks, dest, path) {
  if (typeof dest !== "string" && !(dest instanceof URL)) {
    throw new UsageError("downloadFile takes a local destination path (string or file: URL) in Node.js");
  }
  const target = resolve(dest instanceof URL ? fileURLToPath(dest) : dest);
  if (info.kind === "dir") {
    await extractFolder(chunks, target, path);
    return target;
  }
  const spool = join(dirname(target), `.kiln-${randomBytes(6).toString("hex")}.part`);
  const handle = await writable(dirname(target), () => open(spool, "wx", 0o600));
  try {
    for await (const chunk of chunks) await handle.write(chunk);
    await handle.chmod(info.mode & 0o777);
    await handle.close();
    await rename(spool, target);
  } catch (e) {
    // Whatever broke (the stream, its size, the disk), no half-written file stays behind.
    await handle.close().catch(() => {});
    await rm(spool, { force: true });
    throw e;
  }
  return target;
}

/**
 * Make the local folder `folder` (and its parents), then run `create` in it; a
 * UsageError if the caller's destination cannot be written.
 * @template T
 * @param {string} folder
 * @param {() => Promise<T>} create
 * @returns {Promise<T>}
 */
async function writable(folder, create) {
  try {
    await mkdir(folder, { recursive: true });
    return await create();
  } catch (e) {
    throw new UsageError(`cannot write into ${folder}: ${/** @type {Error} */ (e).message}`, { cause: e });
  }
}

/**
 * Extract a folder's tar stream into `dest`, dropping the folder's own name (the first
 * path component of every entry). Refuses (TransferFailedError) absolute names, `..`,
 * links that point outside `dest`, writing through a link, and device files.
 * @param {AsyncIterable<Uint8Array>} chunks
 * @param {string} dest
 * @param {string} path
 */
export async function extractFolder(chunks, dest, path) {
  await mkdir(dest, { recursive: true });
  const root = await realpath(dest);
  const reader = new TarReader();
  /** @type {import("node:fs/promises").FileHandle | null} */
  let file = null;
  /** @type {(() => Promise<void>) | null} */
  let finish = null;
  const refuse = (/** @type {string} */ why) => new TransferFailedError(`refused to write outside ${dest}: ${why}`);
  try {
    for await (const chunk of chunks) {
      let events;
      try {
        events = reader.push(chunk);
      } catch (e) {
        if (e instanceof TarError) throw new TransferFailedError(`the folder archive of ${path} is damaged: ${e.message}`);
        throw e;
      }
      for (const event of events) {
        if (event.type === "data") {
          if (file !== null) await file.write(event.bytes);
          continue;
        }
        if (finish !== null) {
          await finish();
          finish = null;
          file = null;
        }
        const entry = event.entry;
        const rel = inside(entry.name, refuse);
        if (rel === null) continue; // the folder itself
        const target = join(root, rel);
        await checkParent(root, target, refuse);
        if (entry.kind === "dir") {
          await mkdir(target, { recursive: true, mode: (entry.mode & 0o755) | 0o700 });
        } else if (entry.kind === "file") {
          await removeLink(target);
          const handle = await open(target, "w", (entry.mode & 0o755) | 0o600);
          file = handle;
          const mode = (entry.mode & 0o755) | 0o600;
          finish = async () => {
            await handle.close();
            await chmod(target, mode);
          };
        } else if (entry.kind === "symlink") {
          if (isAbsolute(entry.linkname) || posix.isAbsolute(entry.linkname)) {
            throw refuse(`${entry.name} is a link to the absolute path ${entry.linkname}`);
          }
          // Links only ever point down: then no chain of them can lead out of the destination.
          if (entry.linkname.split("/").includes("..")) {
            throw refuse(`${entry.name} is a link through '..' (${entry.linkname}), outside`);
          }
          const pointsTo = resolve(dirname(target), entry.linkname);
          if (!within(root, pointsTo)) throw refuse(`${entry.name} is a link to ${entry.linkname}, outside`);
          await removeLink(target);
          await symlink(entry.linkname, target);
        } else if (entry.kind === "hardlink") {
          const linked = inside(entry.linkname, refuse);
          if (linked === null) throw refuse(`${entry.name} is a hard link to the folder itself`);
          const source = join(root, linked);
          await checkParent(root, source, refuse);
          await removeLink(target);
          await link(source, target);
        } else {
          throw refuse(`${entry.name} is a special file (type '${entry.typeflag}')`);
        }
      }
    }
    if (finish !== null) await finish();
    finish = null;
    try {
      reader.end();
    } catch (e) {
      throw new TransferFailedError(`the folder archive of ${path} is damaged: ${/** @type {Error} */ (e).message}`);
    }
  } finally {
    if (file !== null) await /** @type {import("node:fs/promises").FileHandle} */ (file).close().catch(() => {});
  }
}

/**
 * The entry's path below the folder's own name, checked; null for the folder itself.
 * @param {string} name
 * @param {(why: string) => Error} refuse
 */
function inside(name, refuse) {
  if (name.startsWith("/")) throw refuse(`${name} is an absolute path`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse(`${name} holds '..'`);
  if (parts.some((p) => p.includes("\0") || p.includes(sep))) throw refuse(`${name} holds a bad character`);
  const rest = parts.slice(1);
  return rest.length === 0 ? null : rest.join(sep);
}

/** @param {string} root @param {string} path */
function within(root, path) {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/**
 * The real parent of `target` must lie inside `root` (a link extracted earlier must not
 * carry a later entry outside).
 * @param {string} root
 * @param {string} target
 * @param {(why: string) => Error} refuse
 */
async function checkParent(root, target, refuse) {
  const parent = dirname(target);
  // Check the deepest folder that exists before making any: mkdir must not follow a link out.
  let existing = parent;
  for (;;) {
    try {
      const real = await realpath(existing);
      if (!within(root, real)) throw refuse(`${basename(target)} would be written through a link to ${real}`);
      break;
    } catch (e) {
      if (/** @type {NodeJS.ErrnoException} */ (e).code !== "ENOENT") throw e;
      existing = dirname(existing);
    }
  }
  if (existing !== parent) await mkdir(parent, { recursive: true });
}

/** Remove `target` if it is a symlink, so writing there never follows it. @param {string} target */
async function removeLink(target) {
  try {
    const stat = await lstat(target);
    if (stat.isSymbolicLink()) await unlink(target);
  } catch (e) {
    if (/** @type {NodeJS.ErrnoException} */ (e).code !== "ENOENT") throw e;
  }
}
