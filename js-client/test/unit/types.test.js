// The hand-written parts kept in step with their sources of truth: the codes table with
// python/kiln/protocol/codes.py and the schema, the .d.ts files with what the entry points
// export, and the browser entry free of Node imports. (The message types and validators
// are generated from the schema: test/unit/generated.test.js.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";

import { ERROR_CODES, ErrorCode } from "../../src/protocol/codes.js";
import { KilnError, errorFromCode } from "../../src/errors.js";
import * as browserEntry from "../../src/browser.js";
import * as nodeEntry from "../../src/node/index.js";
import * as protocolEntry from "../../src/protocol/index.js";
import { Activity } from "../../src/activity.js";
import { Requestor } from "../../src/requestor.js";

// Paths from js-client/test/ (this file is in test/unit/).
const here = (p) => fileURLToPath(new URL(p, new URL("../", import.meta.url)));
const schema = JSON.parse(readFileSync(here("../../protocol/v1/schema.json"), "utf8"));
const protocolDts = readFileSync(here("../types/protocol.d.ts"), "utf8");
const indexDts = readFileSync(here("../types/index.d.ts"), "utf8");
const codesPy = readFileSync(here("../../python/kiln/protocol/codes.py"), "utf8");
const errorsPy = readFileSync(here("../../python/kiln/protocol/errors.py"), "utf8");

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
  const unknown = errorFromCode("quota_exceeded", "over", "p1");
  assert.equal(unknown.code, "internal");
  assert.match(unknown.message, /quota_exceeded/);
  assert.equal(unknown.provider, "p1");
  assert.equal(errorFromCode("image_not_found", "no image", "p2").provider, "p2");
  assert.equal(errorFromCode("no_match", "none").provider, null);
});

test("each code maps to the class errors.py maps it to", () => {
  const table = /_BY_CODE[^{]*\{([^}]*)\}/.exec(errorsPy)[1];
  const python = [...table.matchAll(/ErrorCode\.([A-Z_]+): (\w+),/g)].map(([, name, cls]) => [name, cls]);
  assert.ok(python.length >= 20);
  const unmapped = Object.keys(ErrorCode).filter((name) => !python.some(([mapped]) => mapped === name));
  for (const [name, cls] of [...python, ...unmapped.map((name) => [name, "RemoteError"])]) {
    // JavaScript's names carry an `Error` suffix that Python's do not.
    assert.equal(errorFromCode(ErrorCode[name], "x").name.replace(/Error$/, ""), cls.replace(/Error$/, ""), name);
  }
});

/** Does the .d.ts text declare `name` as a value (or re-export it)? */
const declares = (dts, name) =>
  new RegExp(`export declare (class|function|const) ${name}\\b|export \\{[^}]*\\b${name}\\b[^}]*\\} from`).test(dts);

test("index.d.ts declares everything the entry points export", () => {
  for (const name of Object.keys(nodeEntry)) assert.ok(declares(indexDts, name), `types/index.d.ts does not declare ${name}`);
});

/** The runtime names (classes, functions, constants) the .d.ts text exports: declared, or re-exported as values. */
function runtimeExports(dts) {
  const declared = [...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]);
  const reexported = [...dts.matchAll(/^export \{([^}]*)\} from/gm)].flatMap((m) => m[1].split(",").map((n) => n.trim()));
  return [...declared, ...reexported.filter(Boolean)];
}

test("every runtime name index.d.ts exports exists in the Node and the browser entry", () => {
  const names = runtimeExports(indexDts);
  for (const expected of ["connect", "Requestor", "CommandFailedError", "TaskTimeoutError", "ErrorCode", "errorFromCode"]) {
    assert.ok(names.includes(expected), `the parse found no ${expected}`);
  }
  for (const name of names) {
    assert.ok(name in nodeEntry, `types/index.d.ts exports ${name}, which src/node/index.js does not`);
    assert.ok(name in browserEntry, `types/index.d.ts exports ${name}, which src/browser.js does not`);
  }
  assert.deepEqual(Object.keys(browserEntry).sort(), Object.keys(nodeEntry).sort(), "both entries export the same names");
});

/** The names of the methods and accessors `class` declares in the .d.ts text. */
function members(dts, name) {
  const body = new RegExp(`export declare class ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(dts)[1];
  return new Set([...body.matchAll(/^ {2}(?:readonly )?(\w+)(?:<[^>]*>)?[(?:]/gm)].map((m) => m[1]));
}

test("index.d.ts declares every public method of Activity and Requestor", () => {
  for (const cls of [Activity, Requestor]) {
    const declared = members(indexDts, cls.name);
    const methods = Object.getOwnPropertyNames(cls.prototype).filter((m) => !["constructor", "toString"].includes(m) && !m.startsWith("_"));
    assert.ok(methods.includes("rent") || methods.includes("stream"));
    for (const method of methods) assert.ok(declared.has(method), `types/index.d.ts: ${cls.name} lacks ${method}`);
  }
});

test("protocol.d.ts declares exactly what kiln-client/protocol exports", () => {
  for (const name of Object.keys(protocolEntry)) {
    assert.ok(declares(protocolDts, name), `types/protocol.d.ts does not declare ${name}`);
  }
  for (const [, name] of protocolDts.matchAll(/export declare (?:class|function|const) (\w+)/g)) {
    assert.ok(name in protocolEntry, `types/protocol.d.ts declares ${name}, which src/protocol/index.js does not export`);
  }
});

test("the browser entry imports nothing from Node, nor ws", () => {
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(file, "utf8");
    assert.doesNotMatch(source, /\brequire\(/, `${file} calls require`);
    for (const match of source.matchAll(/^(?:import|export)[^;]*?from\s+"([^"]+)"/gms)) {
      const spec = match[1];
      assert.ok(spec.startsWith("."), `${file} imports ${spec}`);
      visit(resolve(dirname(file), spec));
    }
  };
  visit(here("../src/browser.js"));
  assert.ok(seen.size > 8);
  assert.ok([...seen].some((f) => f.endsWith("/generated/validators.js")), "the generated validators were not visited");
  assert.ok(![...seen].some((f) => f.includes("/node/")));
});

test("the protocol core imports nothing from outside src/protocol/", () => {
  const core = here("../src/protocol/");
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const match of readFileSync(file, "utf8").matchAll(/^(?:import|export)[^;]*?from\s+"([^"]+)"/gms)) {
      const target = resolve(dirname(file), match[1]);
      assert.ok(target.startsWith(core), `${file} imports ${match[1]}`);
      visit(target);
    }
  };
  visit(here("../src/protocol/index.js"));
  assert.ok(seen.size >= 8);
});

test("package.json maps the browser condition away from Node code", () => {
  const pkg = JSON.parse(readFileSync(here("../package.json"), "utf8"));
  assert.equal(pkg.type, "module");
  assert.equal(pkg.exports["."].default, "./src/browser.js");
  assert.equal(pkg.exports["."].node, "./src/node/index.js");
  // Everything else (the generator, the type checker, the linter) is a devDependency.
  assert.deepEqual(Object.keys(pkg.dependencies), ["ws"]);
});
