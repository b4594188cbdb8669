// Tar archives made by hand for the image tests: docker save archives of either layout,
// and broken ones (test/unit/image.test.js, test/integration/image_store.test.js).
import { createHash } from "node:crypto";

/** The digest of `data`, as the protocol writes it. */
export const sha = (data) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
/** A digest's hex part (the file name Docker gives a blob). */
export const hex = (digest) => digest.slice("sha256:".length);

/** One 512-byte ustar header. */
function header(name, { size = 0, type = "0", linkname = "", mode = 0o644 } = {}) {
  const block = Buffer.alloc(512);
  block.write(name, 0, 100);
  block.write(mode.toString(8).padStart(7, "0"), 100);
  block.write("0000000", 108);
  block.write("0000000", 116);
  block.write(size.toString(8).padStart(11, "0"), 124);
  block.write("00000000000", 136);
  block.write(type, 156);
  block.write(linkname, 157, 100);
  block.write("ustar\u000000", 257);
  block.fill(" ", 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, "0")}\u0000 `, 148);
  return block;
}

/**
 * A tar archive of `entries`: [name, content] for a file (a string or a Buffer), or
 * [name, {type, linkname}] for a folder ("5") or a link ("2" symbolic, "1" hard).
 */
export function tar(entries) {
  const parts = [];
  for (const [name, value] of entries) {
    if (typeof value === "string" || Buffer.isBuffer(value)) {
      const data = Buffer.from(value);
      parts.push(header(name, { size: data.length }), data, Buffer.alloc((512 - (data.length % 512)) % 512));
    } else {
      parts.push(header(name, value));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
