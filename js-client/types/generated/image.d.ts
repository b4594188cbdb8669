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
/** The most layers an image may have (the protocol's MAX_LAYERS). */
export declare const MAX_LAYERS = 256;
export type ArchiveFile = {
    /**
     * what to call it in messages (its path)
     */
    name: string;
    /**
     * bytes
     */
    size: number;
    /**
     * up to `length` bytes at `position`
     */
    read: (position: number, length: number) => Promise<Uint8Array>;
    /**
     *   exactly `length` bytes from `position`, in chunks of at most `chunkBytes`, read as they are taken
     */
    chunks: (position: number, length: number, chunkBytes: number) => AsyncIterable<Uint8Array>;
    close: () => Promise<void>;
};
export type Member = {
    kind: "file" | "dir" | "symlink" | "hardlink" | "other";
    /**
     * where its content starts in the archive
     */
    offset: number;
    /**
     * bytes of content
     */
    size: number;
    /**
     * where a link points
     */
    linkname: string;
};
export type Manifest = {
    config: PushedBlob;
    layers: PushedBlob[];
};
export type PushedBlob = {
    digest: string;
    size: number;
};
export type Extent = {
    offset: number;
    size: number;
};
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
export declare class ImageArchive {
    file: ArchiveFile;
    /** the `push_image` manifest: the config, then the layers base first */
    manifest: Manifest;
    /** the image's tags in the archive (`RepoTags`) */
    tags: string[];
    /**
     * @param {ArchiveFile} file
     * @param {Manifest} manifest
     * @param {string[]} tags
     * @param {Map<string, Extent>} extents
     */
    constructor(file: ArchiveFile, manifest: Manifest, tags: string[], extents: Map<string, Extent>);
    /** Docker's image id: the config's digest. */
    get digest(): string;
    /** Bytes of the config and the layers, each distinct blob once. */
    get size(): number;
    /**
     * Bytes of the blobs `digests` name; a RemoteProtocolError for one the image lacks (the
     * hub must want only blobs of the manifest it was sent).
     * @param {readonly string[]} digests
     */
    bytesOf(digests: readonly string[]): number;
    /**
     * The bytes of the blobs `digests` name, whole and in that order, in chunks of at most
     * `chunkBytes`, read from the archive as they are taken. An archive that changed since
     * it was read (a blob cut short) is an ImageError.
     * @param {readonly string[]} digests
     * @param {number} chunkBytes
     * @returns {AsyncGenerator<Uint8Array, void, void>}
     */
    blobs(digests: readonly string[], chunkBytes: number): AsyncGenerator<Uint8Array, void, void>;
}
/**
 * Read the image in the `docker save` archive `file`: its index, `manifest.json` and its
 * config. Throws ImageError when `file` is not such an archive of one image (no or a bad
 * `manifest.json`, a member missing or outside the archive, a config that is not an
 * image's, as many diff ids as layers or not).
 * @param {ArchiveFile} file
 * @returns {Promise<ImageArchive>}
 */
export declare function readArchive(file: ArchiveFile): Promise<ImageArchive>;
