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
export declare const BLOCK = 512;
export declare const MAX_META_BYTES: number;
export type TarEntry = {
    /**
     * the path in the archive
     */
    name: string;
    kind: "file" | "dir" | "symlink" | "hardlink" | "other";
    /**
     * bytes of content (files only)
     */
    size: number;
    /**
     * permission bits
     */
    mode: number;
    /**
     * where a link points
     */
    linkname: string;
    /**
     * the raw type flag
     */
    typeflag: string;
};
export type TarEvent = {
    type: "entry";
    entry: TarEntry;
} | {
    type: "data";
    bytes: Uint8Array;
};
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
export declare class TarError extends Error {
    /** @param {string} message */
    constructor(message: string);
}
export declare class TarReader {
    finished: boolean;
    constructor();
    /**
     * Take the next chunk of the archive.
     * @param {Uint8Array} chunk
     * @returns {TarEvent[]}
     */
    push(chunk: Uint8Array): TarEvent[];
    /**
     * Pass over the content of the entry just read instead of pushing it (to walk an archive
     * by its headers alone): returns how many bytes of the archive to skip, content and
     * padding; the next push starts at the next header. Call only right after an `entry` event.
     */
    skipContent(): number;
    /** The archive is over: throws {@link TarError} if it stopped inside an entry. */
    end(): void;
}
