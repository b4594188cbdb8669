// The generated files are what scripts/generate.mjs makes of protocol/v1/schema.json and of
// the sources' JSDoc today: a model changed in Python, or a JSDoc type changed, and
// `make schema` (`npm run generate`) not run fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const PACKAGE = fileURLToPath(new URL("../..", import.meta.url));
const FROM_SCHEMA = [
  "src/protocol/generated/validators.js",
  "src/protocol/generated/validators.d.ts",
  "types/protocol.generated.d.ts",
  "src/protocol/generated/constants.js",
  "src/protocol/generated/constants.d.ts",
  "src/protocol/generated/limits.js",
  "src/protocol/generated/limits.d.ts",
];

/** Every file under `dir`, relative to it. */
async function filesUnder(dir) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}

test("the committed generated files are the generator's output for the committed schema and sources", async () => {
  const out = await mkdtemp(join(tmpdir(), "kiln-generated-"));
  try {
    await promisify(execFile)(process.execPath, [join(PACKAGE, "scripts/generate.mjs"), out]);
    const declarations = (await filesUnder(join(out, "types/generated"))).map((f) => `types/generated/${f}`);
    assert.ok(declarations.includes("types/generated/node/index.d.ts"), declarations.join(" "));
    assert.deepEqual(await filesUnder(out), [...FROM_SCHEMA, ...declarations].sort());
    const committed = (await filesUnder(join(PACKAGE, "types/generated"))).map((f) => `types/generated/${f}`);
    assert.deepEqual(committed, declarations, "types/generated/ holds other files than the generator makes: run `npm run generate`");
    for (const file of [...FROM_SCHEMA, ...declarations]) {
      const fresh = await readFile(join(out, file), "utf8");
      const now = await readFile(join(PACKAGE, file), "utf8");
      assert.ok(fresh === now, `js-client/${file} is out of date with protocol/v1/schema.json or src/: run \`make schema\``);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
