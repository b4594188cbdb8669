/**
 * Node's side of file transfers: read a local file in chunks for `sendFile`, write a
 * download to disk for `downloadFile`, extracting a folder's tar stream safely, and open
 * a `docker save` archive for `pushImage`.
 *
 * Nothing is read or written whole: each chunk is written (and awaited) before the next
 * is taken, so the download's credit, not the disk's speed, bounds what is in memory.
 * @module
 */
/**
 * Open the local file `local` for streaming.
 * @param {string | URL} local
 * @returns {Promise<import("../activity.js").Source>}
 */
export declare function openSource(local: string | URL): Promise<import("../activity.js").Source>;
/**
 * Read the image in the local `docker save` archive `local` (see `src/image.js`): its
 * index and config now, its layers later, streamed from disk (fs read streams) as the hub
 * wants them. Close it with `archive.file.close()`.
 * @param {string | URL} local
 * @returns {Promise<import("../image.js").ImageArchive>}
 */
export declare function openArchive(local: string | URL): Promise<import("../image.js").ImageArchive>;
/**
 * Write a download to the local `dest`: a file through a temporary file beside it, then
 * renamed (a failed transfer leaves nothing behind), a folder extracted into `dest`.
 * @param {import("../../protocol.js").DownloadInfo} info
 * @param {AsyncIterable<Uint8Array>} chunks
 * @param {string | URL} dest
 * @param {string} path the container path, for messages
 * @returns {Promise<string>} the absolute local path written
 */
export declare function saveDownload(info: import("../../protocol.js").DownloadInfo, chunks: AsyncIterable<Uint8Array>, dest: string | URL, path: string): Promise<string>;
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
export declare function extractFolder(chunks: AsyncIterable<Uint8Array>, dest: string, path: string): Promise<void>;
