/**
 * Images out of `docker save` archives, for `requestor.pushImage()` (protocol 1.1's image
 * store): read the archive's index, build the `push_image` manifest, then stream the blobs
 * the hub wants. No I/O of its own: a platform opens the archive as an {@link ArchiveFile}
 * (Node: a file on disk; a browser: a Blob).
 *
 * A `docker save` archive holds one `manifest.json` naming, for each image, its config file
 * and its layer files (uncompressed tars, base first). Docker's image id is the sha256 of
 * the config; the layers' digests are the config's `rootfs.diff_ids`, and their sizes come
 * from the tar headers. Both layouts Docker writes are read: the legacy one
 * (`<id>/layer.tar`, `<hex>.json`, a layer repeated as a link to the first copy) and the
 * OCI one (`blobs/sha256/<hex>`). The archive is walked by its headers alone, so only
 * `manifest.json` and the config are read whole (both capped); a layer is never held in
 * memory, only streamed in chunks. What cannot be checked cheaply (that a layer's bytes
 * hash to its diff id) is left to the hub, which verifies every blob.
 *
 * Use: `const archive = await readArchive(file)`, send `archive.manifest` (and
 * `archive.tags`), and when the hub answers `want`, send `archive.blobs(want.blobs, chunkBytes)`.
 * @module
 */

import { ImageError, RemoteProtocolError } from "./errors.js";
import { ErrorCode } from "./protocol/generated/constants.js";
import { BLOCK, TarError, TarReader } from "./tar.js";

/** The most layers an image may have (the protocol's MAX_LAYERS). */
export const MAX_LAYERS = 256;
/** The largest `manifest.json` read. */
const MAX_MANIFEST_BYTES = 1024 * 1024;
/** The largest image config read (Docker's are a few KiB; a long history may reach a few MiB). */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
/** The most entries an archive may hold (a legacy archive has three or four per layer). */
const MAX_ENTRIES = 16 * 1024;
/** Links followed from one member before giving up (a loop). */
const MAX_LINKS = 16;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * A `docker save` archive opened for reading at any position.
 * @typedef {object} ArchiveFile
 * @property {string} name what to call it in messages (its path)
 * @property {number} size bytes
 * @property {(position: number, length: number) => Promise<Uint8Array>} read up to `length` bytes at `position`
 * @property {(position: number, length: number, chunkBytes: number) => AsyncIterable<Uint8Array>} chunks
 *   exactly `length` bytes from `position`, in chunks of at most `chunkBytes`, read as they are taken
 * @property {() => Promise<void>} close
 */

/**
 * A member of the archive: where its content lies.
 * @typedef {object} Member
 * @property {"file" | "dir" | "symlink" | "hardlink" | "other"} kind
 * @property {number} offset where its content starts in the archive
 * @property {number} size bytes of content
 * @property {string} linkname where a link points
 */

/**
 * The manifest a push sends: a parsed `Manifest` without the blobs' `expanded` (1.4), which only
 * the hub measures and sets.
 * @typedef {{config: PushedBlob, layers: PushedBlob[]}} Manifest
 * @typedef {{digest: string, size: number}} PushedBlob
 */
/** @typedef {{offset: number, size: number}} Extent where a blob's bytes lie in the archive */

/** An image read from a `docker save` archive: what to push, and where its blobs lie. */
export class ImageArchive {
  /**
   * @param {ArchiveFile} file
   * @param {Manifest} manifest
   * @param {string[]} tags
   * @param {Map<string, Extent>} extents
   */
  constructor(file, manifest, tags, extents) {
    this.file = file;
    /** the `push_image` manifest: the config, then the layers base first */
    this.manifest = manifest;
    /** the image's tags in the archive (`RepoTags`) */
    this.tags = tags;
    this._extents = extents;
  }

  /** Docker's image id: the config's digest. */
  get digest() {
    return this.manifest.config.digest;
  }

  /** Bytes of the config and the layers, each distinct blob once. */
  get size() {
    let total = 0;
    for (const extent of this._extents.values()) total += extent.size;
    return total;
  }

  /**
   * Bytes of the blobs `digests` name; a RemoteProtocolError for one the image lacks (the
   * hub must want only blobs of the manifest it was sent).
   * @param {readonly string[]} digests
   */
  bytesOf(digests) {
    return digests.reduce((total, digest) => total + this._extent(digest).size, 0);
  }

  /**
   * The bytes of the blobs `digests` name, whole and in that order, in chunks of at most
   * `chunkBytes`, read from the archive as they are taken. An archive that changed since
   * it was read (a blob cut short) is an ImageError.
   * @param {readonly string[]} digests
   * @param {number} chunkBytes
   * @returns {AsyncGenerator<Uint8Array, void, void>}
   */
  async *blobs(digests, chunkBytes) {
    const extents = digests.map((digest) => this._extent(digest));
    for (const [i, { offset, size }] of extents.entries()) {
      let read = 0;
      for await (const chunk of this.file.chunks(offset, size, chunkBytes)) {
        read += chunk.byteLength;
        yield chunk;
      }
      if (read !== size) {
        throw new ImageError(`${this.file.name} changed while it was sent: ${digests[i]} ended after ${read} of ${size} bytes`);
      }
    }
  }

  /** @param {string} digest */
  _extent(digest) {
    const extent = this._extents.get(digest);
    if (extent === undefined) {
      throw new RemoteProtocolError(`the hub wants ${digest}, which is no blob of the image pushed`, {
        code: ErrorCode.OUT_OF_ORDER,
      });
    }
    return extent;
  }
}

/**
 * Read the image in the `docker save` archive `file`: its index, `manifest.json` and its
 * config. Throws ImageError when `file` is not such an archive of one image (no or a bad
 * `manifest.json`, a member missing or outside the archive, a config that is not an
 * image's, as many diff ids as layers or not).
 * @param {ArchiveFile} file
 * @returns {Promise<ImageArchive>}
 */
export async function readArchive(file) {
  const what = file.name;
  const members = await indexArchive(file);
  if (!members.has("manifest.json")) throw new ImageError(`${what} is not a docker save archive: it holds no manifest.json`);
  const index = await readMember(file, find(members, "manifest.json", what), "manifest.json", MAX_MANIFEST_BYTES);
  const entry = parseJson(index, `${what}: manifest.json`);
  if (!Array.isArray(entry) || entry.length !== 1) {
    const count = Array.isArray(entry) ? `${entry.length} images` : "no list of images";
    throw new ImageError(`${what}: manifest.json holds ${count}; push an archive of one image (docker save IMAGE)`);
  }
  const image = entry[0];
  if (!isObject(image) || typeof image.Config !== "string" || !isStringList(image.Layers)) {
    throw new ImageError(`${what}: manifest.json does not name a Config and its Layers`);
  }
  const tags = image.RepoTags == null ? [] : image.RepoTags;
  if (!isStringList(tags)) throw new ImageError(`${what}: manifest.json's RepoTags is not a list of names`);

  const configMember = find(members, image.Config, what);
  const configBytes = await readMember(file, configMember, image.Config, MAX_CONFIG_BYTES);
  const config = parseJson(configBytes, `${what}: the config ${image.Config}`);
  const diffIds = isObject(config) && isObject(config.rootfs) ? config.rootfs.diff_ids : undefined;
  if (!isStringList(diffIds) || !diffIds.every((id) => DIGEST.test(id))) {
    throw new ImageError(`${what}: the config ${image.Config} lists no layer digests (rootfs.diff_ids)`);
  }
  if (diffIds.length !== image.Layers.length) {
    throw new ImageError(
      `${what}: the config lists ${diffIds.length} layer digests, manifest.json ${image.Layers.length} layers`,
    );
  }
  if (image.Layers.length > MAX_LAYERS) {
    throw new ImageError(`${what}: the image has ${image.Layers.length} layers, more than ${MAX_LAYERS}`);
  }
  const configDigest = `sha256:${await sha256Hex(configBytes)}`;
  /** @type {Map<string, Extent>} */
  const extents = new Map([[configDigest, { offset: configMember.offset, size: configMember.size }]]);
  const layers = image.Layers.map((name, i) => {
    const member = find(members, name, what);
    if (!extents.has(diffIds[i])) extents.set(diffIds[i], { offset: member.offset, size: member.size });
    return { digest: diffIds[i], size: member.size };
  });
  const manifest = { config: { digest: configDigest, size: configBytes.byteLength }, layers };
  return new ImageArchive(file, manifest, [...tags], extents);
}

/**
 * Every member of the archive by name, walked by its headers alone (content is skipped).
 * @param {ArchiveFile} file
 * @returns {Promise<Map<string, Member>>}
 */
async function indexArchive(file) {
  /** @type {Map<string, Member>} */
  const members = new Map();
  const reader = new TarReader();
  let position = 0;
  try {
    while (!reader.finished) {
      const block = await file.read(position, BLOCK);
      if (block.byteLength === 0) break; // no end-of-archive blocks: the end of the file will do
      if (block.byteLength < BLOCK) throw new TarError("the archive ends inside a header");
      position += BLOCK;
      for (const event of reader.push(block)) {
        if (event.type !== "entry") continue;
        const { entry } = event;
        const name = memberName(entry.name);
        if (name === null) throw new ImageError(`${file.name}: the archive holds ${JSON.stringify(entry.name)}, outside it`);
        const skip = reader.skipContent();
        if (position + entry.size > file.size) throw new TarError(`${entry.name} is cut short`);
        if (name !== "") members.set(name, { kind: entry.kind, offset: position, size: entry.size, linkname: entry.linkname });
        if (members.size > MAX_ENTRIES) throw new ImageError(`${file.name}: more than ${MAX_ENTRIES} entries`);
        position += skip;
      }
    }
    reader.end();
  } catch (e) {
    if (!(e instanceof TarError)) throw e;
    throw new ImageError(`${file.name} is not a docker save archive: ${e.message}`, { cause: e });
  }
  return members;
}

/**
 * The content of `member`, at most `limit` bytes.
 * @param {ArchiveFile} file
 * @param {Member} member
 * @param {string} name its name, for messages
 * @param {number} limit
 */
async function readMember(file, member, name, limit) {
  if (member.size > limit) throw new ImageError(`${file.name}: ${name} is larger than ${limit} bytes`);
  const bytes = await file.read(member.offset, member.size);
  if (bytes.byteLength !== member.size) throw new ImageError(`${file.name}: ${name} is cut short`);
  return bytes;
}

/**
 * The regular file `name` stands for in the archive, links followed; an ImageError when
 * there is none, or a link leads outside the archive.
 * @param {Map<string, Member>} members
 * @param {string} name a name from manifest.json
 * @param {string} what the archive, for messages
 * @returns {Member}
 */
function find(members, name, what) {
  let current = memberName(name);
  for (let hops = 0; current !== null && current !== "" && hops <= MAX_LINKS; hops++) {
    const member = members.get(current);
    if (member === undefined) throw new ImageError(`${what}: manifest.json names ${name}, which the archive lacks`);
    if (member.kind === "file") return member;
    if (member.kind === "symlink") {
      // Relative to the link's folder (a legacy archive links a repeated layer to its first copy).
      const folder = current.split("/").slice(0, -1);
      current = member.linkname.startsWith("/") ? null : memberName([...folder, member.linkname].join("/"));
    } else if (member.kind === "hardlink") {
      current = memberName(member.linkname);
    } else {
      throw new ImageError(`${what}: ${name} is not a file in the archive`);
    }
  }
  throw new ImageError(`${what}: ${name} leads outside the archive, or through too many links`);
}

/**
 * `name` as a path inside the archive (no `.`, no leading `./` or trailing `/`; "" for the
 * archive's root), or null when it is absolute or climbs out with `..`.
 * @param {string} name
 * @returns {string | null}
 */
function memberName(name) {
  if (name.startsWith("/")) return null;
  /** @type {string[]} */
  const parts = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length === 0) return null;
      parts.pop();
    } else {
      parts.push(part);
    }
  }
  return parts.join("/");
}

/**
 * @param {Uint8Array} bytes
 * @param {string} what
 * @returns {unknown}
 */
function parseJson(bytes, what) {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new ImageError(`${what} is not JSON: ${/** @type {Error} */ (e).message}`, { cause: e });
  }
}

/** @param {Uint8Array} bytes */
async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", /** @type {Uint8Array<ArrayBuffer>} */ (bytes)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * @param {unknown} value
 * @returns {value is Record<string, any>}
 */
const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * @param {unknown} value
 * @returns {value is string[]}
 */
const isStringList = (value) => Array.isArray(value) && value.every((item) => typeof item === "string");
