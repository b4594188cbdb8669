/**
 * Node's side of file transfers: read a local file in chunks for `sendFile`, write a
 * download to disk for `downloadFile`, extracting a folder's tar stream safely, and open
 * a `docker save` archive for `pushImage`.
 *
 * Nothing is read or written whole: each chunk is written (and awaited) before the next
 * is taken, so the download's credit, not the disk's speed, bounds what is in memory.
 * @module
 */

import { open, mkdir, rename, rm, realpath, unlink, symlink, link } from "node:fs/promises";
import { basename, dirname, join, resolve, relative, sep, isAbsolute, posix } from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

import { FileNotFoundError, TransferFailedError, UsageError } from "../errors.js";
import { readArchive } from "../image.js";
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
 * Read the image in the local `docker save` archive `local` (see `src/image.js`): its
 * index and config now, its layers later, streamed from disk (fs read streams) as the hub
 * wants them. Close it with `archive.file.close()`.
 * @param {string | URL} local
 * @returns {Promise<import("../image.js").ImageArchive>}
 */
export async function openArchive(local) {
  if (typeof local !== "string" && !(local instanceof URL)) {
    throw new UsageError("pushImage takes the path of a docker save archive (string or file: URL) in Node.js");
  }
  const name = local instanceof URL ? fileURLToPath(local) : local;
  let handle;
  try {
    handle = await open(local, "r");
  } catch (e) {
    throw new FileNotFoundError(`cannot read the image archive ${name}: ${/** @type {Error} */ (e).message}`, { cause: e });
  }
  const file = handle;
  try {
    const stat = await file.stat();
    if (!stat.isFile()) throw new FileNotFoundError(`${name} is not a regular file`);
    return await readArchive({
      name,
      size: stat.size,
      async read(position, length) {
        const buffer = new Uint8Array(length);
        let filled = 0;
        while (filled < length) {
          const { bytesRead } = await file.read(buffer, filled, length - filled, position + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        return buffer.subarray(0, filled);
      },
      async *chunks(position, length, chunkBytes) {
        if (length === 0) return;
        // A stream of its own over the shared handle, which stays open for the next blob.
        const end = position + length - 1;
        yield* file.createReadStream({ start: position, end, highWaterMark: chunkBytes, autoClose: false });
      },
      close: () => file.close(),
    });
  } catch (e) {
    await file.close();
    throw e;
  }
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
 * Extract a folder's tar stream into `dest` as it arrives, dropping the folder's own name
 * (the first path component of every entry).
 *
 * Nothing lands outside `dest`: absolute names, `..`, links that do not point down,
 * writing through a link that leads out, and special files are refused. A later entry
 * replaces an earlier one of the same name (never writing through it); whatever else a
 * crafted archive holds (a file where a folder is due, a link in a loop, a hard link to
 * nothing, a cut or garbled stream) ends in a TransferFailedError, never in an error of
 * the local file system. An error of the stream itself (cancelled, over `maxBytes`, the
 * provider lost) passes through as it is.
 * @param {AsyncIterable<Uint8Array>} chunks
 * @param {string} dest
 * @param {string} path the container path, for messages
 */
export async function extractFolder(chunks, dest, path) {
  const extraction = new Extraction(await writable(dest, () => realpath(dest)), dest);
  const reader = new TarReader();
  try {
    for await (const chunk of chunks) {
      for (const event of readTar(() => reader.push(chunk), path)) await extraction.take(event);
    }
    readTar(() => reader.end(), path);
    await extraction.finish();
  } finally {
    await extraction.abandon();
  }
}

/**
 * `read()`, with a tar error turned into a TransferFailedError.
 * @template T
 * @param {() => T} read
 * @param {string} path
 * @returns {T}
 */
function readTar(read, path) {
  try {
    return read();
  } catch (e) {
    if (!(e instanceof TarError)) throw e;
    throw new TransferFailedError(`the folder archive of ${path} is damaged: ${e.message}`, { cause: e });
  }
}

/** The entries of a tar stream, written below `root` one after another as they come. */
class Extraction {
  /**
   * @param {string} root the destination's real path
   * @param {string} dest the destination as the caller named it, for messages
   */
  constructor(root, dest) {
    this.root = root;
    this.dest = dest;
    /** @type {import("node:fs/promises").FileHandle | null} the file whose content is arriving */
    this._file = null;
    /** the name in the archive of the entry being written, for messages */
    this._name = "";
  }

  /** @param {string} why */
  _refuse(why) {
    return new TransferFailedError(`refused to write outside ${this.dest}: ${why}`);
  }

  /**
   * Write the tar reader's next event: an entry, or data of the file entry before it.
   * @param {import("../tar.js").TarEvent} event
   */
  async take(event) {
    await this._guarded(async () => {
      if (event.type === "data") {
        await this._file?.write(event.bytes);
      } else {
        await this._endFile();
        await this._entry(event.entry);
      }
    });
  }

  /** The archive is over: close the last file. */
  async finish() {
    await this._guarded(() => this._endFile());
  }

  /** Close the file being written, if any, after a failure (whose error is what matters). */
  async abandon() {
    await this._file?.close().catch(() => {});
  }

  /** @param {() => Promise<void>} step */
  async _guarded(step) {
    try {
      await step();
    } catch (e) {
      if (!isSystemError(e)) throw e;
      // The file system's own refusal (EEXIST, ELOOP, ENOENT...) of what a crafted archive asks.
      throw new TransferFailedError(`cannot extract ${this._name} into ${this.dest}: ${e.message}`, { cause: e });
    }
  }

  async _endFile() {
    const file = this._file;
    this._file = null;
    await file?.close();
  }

  /** @param {import("../tar.js").TarEntry} entry */
  async _entry(entry) {
    this._name = entry.name;
    const rel = inside(entry.name, (why) => this._refuse(why));
    if (rel === null) return; // the folder itself
    if (entry.kind === "other") throw this._refuse(`${entry.name} is a special file (type '${entry.typeflag}')`);
    const target = join(this.root, rel);
    await this._checkFolder(target);
    await mkdir(dirname(target), { recursive: true });
    if (entry.kind === "dir") {
      await mkdir(target, { recursive: true, mode: (entry.mode & 0o755) | 0o700 });
    } else if (entry.kind === "file") {
      const mode = (entry.mode & 0o755) | 0o600;
      await clear(target);
      this._file = await open(target, "wx", mode);
      await this._file.chmod(mode); // the archive's mode, whatever the umask
    } else if (entry.kind === "symlink") {
      const to = entry.linkname;
      if (isAbsolute(to) || posix.isAbsolute(to)) throw this._refuse(`${entry.name} is a link to the absolute path ${to}`);
      // Links only ever point down: then no chain of them can lead out of the destination.
      if (to.split("/").includes("..")) throw this._refuse(`${entry.name} is a link through '..' (${to}), outside`);
      if (to.includes("\0")) throw this._refuse(`${entry.name} is a link to a name with a bad character`);
      if (!within(this.root, resolve(dirname(target), to))) throw this._refuse(`${entry.name} is a link to ${to}, outside`);
      await clear(target);
      await symlink(to, target);
    } else if (entry.kind === "hardlink") {
      const linked = inside(entry.linkname, (why) => this._refuse(why));
      if (linked === null) throw this._refuse(`${entry.name} is a hard link to the folder itself`);
      const source = join(this.root, linked);
      await this._checkFolder(source);
      await clear(target);
      try {
        await link(source, target);
      } catch (e) {
        if (!isSystemError(e) || e.code !== "ENOENT") throw e;
        throw new TransferFailedError(
          `${entry.name} is a hard link to ${entry.linkname}, which the archive did not hold before it`,
          { cause: e },
        );
      }
    }
  }

  /**
   * The folder of `target` must lie inside the destination once links are followed: a
   * link extracted earlier must not carry a later entry outside. Of a folder not made
   * yet, the deepest existing one is checked, so that mkdir never follows a link out.
   * @param {string} target
   */
  async _checkFolder(target) {
    for (let folder = dirname(target); ; folder = dirname(folder)) {
      let real;
      try {
        real = await realpath(folder);
      } catch (e) {
        if (!isSystemError(e) || e.code !== "ENOENT") throw e;
        continue;
      }
      if (!within(this.root, real)) throw this._refuse(`${basename(target)} would be written through a link to ${real}`);
      return;
    }
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
 * Remove what an earlier entry (or an earlier download) left at `target` (a folder there
 * is an error): a new entry must never write through an old link or into a hard-linked file.
 * @param {string} target
 */
async function clear(target) {
  try {
    await unlink(target);
  } catch (e) {
    if (!isSystemError(e) || e.code !== "ENOENT") throw e;
  }
}

/**
 * An error of a system call (it names one), as opposed to a bug or a Kiln error.
 * @param {unknown} e
 * @returns {e is NodeJS.ErrnoException}
 */
function isSystemError(e) {
  return e instanceof Error && typeof (/** @type {NodeJS.ErrnoException} */ (e).syscall) === "string";
}
