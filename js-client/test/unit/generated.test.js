// The generated files are what scripts/generate.mjs makes of protocol/v1/schema.json
// today: a model changed in Python and `make schema` not run fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const PACKAGE = fileURLToPath(new URL("../..", import.meta.url));
const GENERATED = [
  "src/protocol/generated/validators.js",
  "src/protocol/generated/validators.d.ts",
  "types/protocol.generated.d.ts",
];

test("the committed generated files are the generator's output for the committed schema", async () => {
  const out = await mkdtemp(join(tmpdir(), "kiln-generated-"));
  try {
    await promisify(execFile)(process.execPath, [join(PACKAGE, "scripts/generate.mjs"), out]);
    for (const file of GENERATED) {
      const fresh = await readFile(join(out, file), "utf8");
      const committed = await readFile(join(PACKAGE, file), "utf8");
      assert.ok(fresh === committed, `js-client/${file} is out of date with protocol/v1/schema.json: run \`make schema\``);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
