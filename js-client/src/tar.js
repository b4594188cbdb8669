/**
 * A streaming tar reader with no I/O: push chunks in, take entries and their data out.
 *
 * Reads what Docker's archive API produces: ustar headers (with the `prefix` field),
 * pax extended headers (`path`, `linkpath`, `size`) and GNU long names and link names
 * (`L`, `K`), sizes in octal or GNU base-256. File data is handed out as views of the
 * chunks pushed in (no copy); only headers and long names are buffered, and those are
 * capped at {@link MAX_META_BYTES}.
 *
 * Use: `for (const event of reader.push(chunk)) ...` for every chunk, then `reader.end()`.
 * Events come in order: `entry`, then `data` events for its content, then the next `entry`.
 * Nothing here decides whether an entry is safe to write; the extractor does that.
 * @module
 */

export const BLOCK = 512;
export const MAX_META_BYTES = 1024 * 1024;

/**
 * @typedef {object} TarEntry
 * @property {string} name the path in the archive
 * @property {"file" | "dir" | "symlink" | "hardlink" | "other"} kind
 * @property {number} size bytes of content (files only)
 * @property {number} mode permission bits
 * @property {string} linkname where a link points
 * @property {string} typeflag the raw type flag
 */

/** @typedef {{type: "entry", entry: TarEntry} | {type: "data", bytes: Uint8Array}} TarEvent */

export class TarError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "TarError";
  }
}

const decoder = new TextDecoder();

/** @param {Uint8Array} block @param {number} start @param {number} length */
function text(block, start, length) {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return decoder.decode(end === -1 ? field : field.subarray(0, end));
}

/** @param {Uint8Array} block @param {number} start @param {number} length */
function number(block, start, length) {
  if (block[start] & 0x80) {
    // GNU base-256: the remaining bits, big-endian.
    let value = block[start] & 0x7f;
    for (let i = start + 1; i < start + length; i++) value = value * 256 + block[i];
    return value;
  }
  const digits = text(block, start, length).trim();
  if (digits === "") return 0;
  if (!/^[0-7]+$/.test(digits)) throw new TarError(`bad octal number '${digits}' in a tar header`);
  return parseInt(digits, 8);
}

/** Bytes of zeros after `size` bytes of content, up to the next block. @param {number} size */
const padding = (size) => (BLOCK - (size % BLOCK)) % BLOCK;

/** @param {Uint8Array} block */
function checksumOk(block) {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i];
  return sum === number(block, 148, 8);
}

/**
 * Parse the records of a pax extended header: "<length> <key>=<value>\n" each.
 * @param {Uint8Array} data
 * @returns {Record<string, string>}
 */
function paxRecords(data) {
  /** @type {Record<string, string>} */
  const records = {};
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) break;
    const length = parseInt(decoder.decode(data.subarray(at, space)), 10);
    if (!Number.isInteger(length) || length <= 0 || at + length > data.length) {
      throw new TarError("bad pax extended header record");
    }
    const record = decoder.decode(data.subarray(space + 1, at + length - 1));
    const eq = record.indexOf("=");
    if (eq > 0) records[record.slice(0, eq)] = record.slice(eq + 1);
    at += length;
  }
  return records;
}

const KINDS = /** @type {Record<string, TarEntry["kind"]>} */ ({
  "0": "file", "\0": "file", "7": "file", "5": "dir", "2": "symlink", "1": "hardlink",
});

export class TarReader {
  constructor() {
    /** @type {Uint8Array} bytes of a header block not yet complete */
    this._header = new Uint8Array(BLOCK);
    this._headerFill = 0;
    /** bytes of entry content still to come, then padding to skip */
    this._remaining = 0;
    this._padding = 0;
    /** @type {{flag: string, parts: Uint8Array[], size: number} | null} a pax or GNU long-name body being read */
    this._meta = null;
    /** @type {Record<string, string>} overrides for the next entry */
    this._next = {};
    this._zeroBlocks = 0;
    this.finished = false;
  }

  /**
   * Take the next chunk of the archive.
   * @param {Uint8Array} chunk
   * @returns {TarEvent[]}
   */
  push(chunk) {
    /** @type {TarEvent[]} */
    const events = [];
    let at = 0;
    while (at < chunk.length && !this.finished) {
      if (this._remaining > 0) {
        const take = Math.min(this._remaining, chunk.length - at);
        const piece = chunk.subarray(at, at + take);
        if (this._meta !== null) {
          this._meta.parts.push(piece.slice());
        } else {
          events.push({ type: "data", bytes: piece });
        }
        this._remaining -= take;
        at += take;
        if (this._remaining === 0 && this._meta !== null) this._endMeta();
        continue;
      }
      if (this._padding > 0) {
        const skip = Math.min(this._padding, chunk.length - at);
        this._padding -= skip;
        at += skip;
        continue;
      }
      const take = Math.min(BLOCK - this._headerFill, chunk.length - at);
      this._header.set(chunk.subarray(at, at + take), this._headerFill);
      this._headerFill += take;
      at += take;
      if (this._headerFill === BLOCK) {
        this._headerFill = 0;
        const event = this._takeHeader(this._header);
        if (event !== null) events.push(event);
      }
    }
    return events;
  }

  /**
   * Pass over the content of the entry just read instead of pushing it (to walk an archive
   * by its headers alone): returns how many bytes of the archive to skip, content and
   * padding; the next push starts at the next header. Call only right after an `entry` event.
   */
  skipContent() {
    const bytes = this._remaining + this._padding;
    this._remaining = 0;
    this._padding = 0;
    return bytes;
  }

  /** The archive is over: throws {@link TarError} if it stopped inside an entry. */
  end() {
    if (this._remaining > 0 || this._padding > 0 || this._headerFill > 0 || this._meta !== null) {
      throw new TarError("the tar stream ended in the middle of an entry");
    }
  }

  /** @param {Uint8Array} block @returns {TarEvent | null} */
  _takeHeader(block) {
    if (block.every((b) => b === 0)) {
      this._zeroBlocks += 1;
      if (this._zeroBlocks >= 2) this.finished = true;
      return null;
    }
    this._zeroBlocks = 0;
    if (!checksumOk(block)) throw new TarError("bad tar header checksum");
    const flag = String.fromCharCode(block[156]);
    const size = number(block, 124, 12);
    if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
      if (size > MAX_META_BYTES) throw new TarError(`tar metadata entry of ${size} bytes is too large`);
      this._meta = { flag, parts: [], size };
      this._remaining = size;
      this._padding = padding(size);
      if (size === 0) this._endMeta();
      return null;
    }
    const magic = text(block, 257, 6);
    const prefix = magic.startsWith("ustar") ? text(block, 345, 155) : "";
    let name = text(block, 0, 100);
    if (prefix !== "") name = `${prefix}/${name}`;
    let linkname = text(block, 157, 100);
    const next = this._next;
    this._next = {};
    if (next.path !== undefined) name = next.path;
    if (next.linkpath !== undefined) linkname = next.linkpath;
    const kind = KINDS[flag] ?? "other";
    const entrySize = next.size !== undefined ? Number(next.size) : size;
    if (!Number.isSafeInteger(entrySize) || entrySize < 0) throw new TarError("bad entry size in a tar header");
    if (kind === "other") {
      // Devices, fifos, sparse files...: their content (if any) is skipped, not handed out.
      this._padding = entrySize + padding(entrySize);
    } else if (kind === "file") {
      this._remaining = entrySize;
      this._padding = padding(entrySize);
    }
    const content = kind === "file" ? entrySize : 0;
    return {
      type: "entry",
      entry: { name, kind, size: content, mode: number(block, 100, 8) & 0o7777, linkname, typeflag: flag },
    };
  }

  _endMeta() {
    const meta = /** @type {NonNullable<TarReader["_meta"]>} */ (this._meta);
    this._meta = null;
    const data = new Uint8Array(meta.size);
    let at = 0;
    for (const part of meta.parts) {
      data.set(part, at);
      at += part.length;
    }
    if (meta.flag === "x") {
      const records = paxRecords(data);
      for (const key of ["path", "linkpath", "size"]) if (key in records) this._next[key] = records[key];
    } else if (meta.flag === "L") {
      this._next.path = text(data, 0, data.length);
    } else if (meta.flag === "K") {
      this._next.linkpath = text(data, 0, data.length);
    }
    // "g" (global pax) sets defaults nobody here needs; it is read and dropped.
  }
}
