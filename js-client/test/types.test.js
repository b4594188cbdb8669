// The hand-written parts kept in step with their sources of truth: the validator and the
// .d.ts with protocol/v1/schema.json, the codes table with python/kiln/protocol/codes.py,
// the .d.ts with what the entry points export, and the browser entry free of Node imports.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

import { ERROR_CODES, ErrorCode } from "../src/protocol/codes.js";
import { MODELS } from "../src/protocol/messages.js";
import { KilnError, errorFromCode } from "../src/errors.js";
import * as nodeEntry from "../src/node/index.js";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const schema = JSON.parse(readFileSync(here("../../protocol/v1/schema.json"), "utf8"));
const protocolDts = readFileSync(here("../types/protocol.d.ts"), "utf8");
const indexDts = readFileSync(here("../types/index.d.ts"), "utf8");
const codesPy = readFileSync(here("../../python/kiln/protocol/codes.py"), "utf8");

/** Every message definition of the schema: [type literal, $defs entry]. */
const messageDefs = Object.values(schema.$defs)
  .filter((d) => d.properties?.type?.const !== undefined)
  .map((d) => [d.properties.type.const, d]);

/** The body of the interface in protocol.d.ts that holds `type: "<literal>"`, or `interface <name>`. */
function interfaceBody({ literal, name }) {
  for (const match of protocolDts.matchAll(/export interface (\w+) \{([^}]*)\}/g)) {
    if (name !== undefined ? match[1] === name : match[2].includes(`type: "${literal}";`)) return match[2];
  }
  return null;
}

const fieldsOf = (body) => new Set([...body.matchAll(/^\s*(\w+)\??:/gm)].map((m) => m[1]));

test("the schema has every message type the validator knows, and no other", () => {
  assert.deepEqual(new Set(messageDefs.map(([t]) => t)), new Set(Object.keys(MODELS)));
  assert.equal(messageDefs.length, 20);
});

test("the validator has exactly the schema's fields for every message", () => {
  for (const [type, def] of messageDefs) {
    assert.deepEqual(new Set(Object.keys(MODELS[type].fields)), new Set(Object.keys(def.properties)), type);
    const required = Object.entries(MODELS[type].fields).filter(([, f]) => f.required).map(([k]) => k);
    assert.deepEqual(new Set(required), new Set(def.required ?? []), `${type}: required fields`);
  }
});

test("the .d.ts declares every message type with every field of the schema", () => {
  for (const [type, def] of messageDefs) {
    const body = interfaceBody({ literal: type });
    assert.ok(body !== null, `types/protocol.d.ts has no interface with type: "${type}"`);
    assert.deepEqual(fieldsOf(body), new Set(Object.keys(def.properties)), type);
  }
  for (const name of ["Resources", "Demand", "Limits", "ProviderInfo"]) {
    const body = interfaceBody({ name });
    assert.ok(body !== null, name);
    assert.deepEqual(fieldsOf(body), new Set(Object.keys(schema.$defs[name].properties)), name);
  }
});

test("the codes table is codes.py's, and the schema's list of known codes", () => {
  const python = new Set([...codesPy.matchAll(/^\s+[A-Z_]+ = "([a-z_]+)"$/gm)].map((m) => m[1]));
  assert.ok(python.size >= 26);
  assert.deepEqual(new Set(ERROR_CODES), python);
  const description = schema.$defs.Error.properties.code.description;
  const listed = new Set(/Known codes: ([a-z_, ]+)\./.exec(description)[1].split(", "));
  assert.deepEqual(new Set(ERROR_CODES), listed);
  const declared = new Set([...protocolDts.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]));
  for (const code of python) assert.ok(declared.has(code), `KnownErrorCode lacks ${code}`);
});

test("every code maps to a KilnError carrying that code", () => {
  for (const code of Object.values(ErrorCode)) {
    const error = errorFromCode(code, "x");
    assert.ok(error instanceof KilnError);
    assert.equal(error.code, code);
  }
  const unknown = errorFromCode("quota_exceeded", "over");
  assert.equal(unknown.code, "internal");
  assert.match(unknown.message, /quota_exceeded/);
});

test("index.d.ts declares everything the entry points export", () => {
  for (const name of Object.keys(nodeEntry)) {
    const declared = new RegExp(`export declare (class|function|const) ${name}\\b|export \\{[^}]*\\b${name}\\b[^}]*\\} from`);
    assert.match(indexDts, declared, `types/index.d.ts does not declare ${name}`);
  }
});

test("the browser entry imports nothing from Node, nor ws", () => {
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(file, "utf8");
    for (const match of source.matchAll(/^(?:import|export)[^;]*?from\s+"([^"]+)"/gms)) {
      const spec = match[1];
      assert.ok(spec.startsWith("."), `${file} imports ${spec}`);
      visit(resolve(dirname(file), spec));
    }
  };
  visit(here("../src/browser.js"));
  assert.ok(seen.size > 8);
  assert.ok(![...seen].some((f) => f.includes("/node/")));
});

test("package.json maps the browser condition away from Node code", () => {
  const pkg = JSON.parse(readFileSync(here("../package.json"), "utf8"));
  assert.equal(pkg.type, "module");
  assert.equal(pkg.exports["."].default, "./src/browser.js");
  assert.equal(pkg.exports["."].node, "./src/node/index.js");
  // Everything else (the generator, the type checker, the linter) is a devDependency.
  assert.deepEqual(Object.keys(pkg.dependencies), ["ws"]);
});
