// The hand-written parts kept in step with their sources of truth: the error classes with
// the schema's table of codes, the .d.ts files with what the entry points export, and the
// browser entry free of Node imports. (The message types, validators, codes and limits are
// generated from the schema: test/unit/generated.test.js.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";

import { CloseCode, ERROR_CODES, ErrorCode, PROTOCOL_VERSION } from "../../src/protocol/generated/constants.js";
import * as limits from "../../src/protocol/generated/limits.js";
import { KilnError, errorFromCode } from "../../src/errors.js";
import * as browserEntry from "../../src/browser.js";
import * as nodeEntry from "../../src/node/index.js";
import * as protocolEntry from "../../src/protocol/index.js";
import { Activity } from "../../src/activity.js";
import { Requestor } from "../../src/requestor.js";

// Paths from js-client/test/ (this file is in test/unit/).
const here = (p) => fileURLToPath(new URL(p, new URL("../", import.meta.url)));
const schema = JSON.parse(readFileSync(here("../../protocol/v1/schema.json"), "utf8"));
const codes = schema["x-kiln-error-codes"];

test("the codes, close codes and limits are the schema's, and so is its list of known codes", () => {
  assert.ok(Object.keys(codes).length >= 26);
  assert.deepEqual(new Set(ERROR_CODES), new Set(Object.keys(codes)));
  for (const code of Object.keys(codes)) assert.equal(ErrorCode[code.toUpperCase()], code);
  const description = schema.$defs.Error.properties.code.description;
  const listed = new Set(/Known codes: ([a-z_, ]+)\./.exec(description)[1].split(", "));
  assert.deepEqual(new Set(ERROR_CODES), listed);
  const closes = Object.entries(schema["x-kiln-close-codes"]).map(([name, { code }]) => [name.toUpperCase(), code]);
  assert.deepEqual(Object.entries(CloseCode), closes);
  assert.equal(CloseCode.HANDSHAKE, 4003);
  assert.deepEqual({ ...limits }, Object.fromEntries(Object.entries(schema["x-kiln-limits"]).map(([n, v]) => [n.toUpperCase(), v])));
  assert.equal(limits.CHUNK_BYTES, 256 * 1024);
  assert.equal(PROTOCOL_VERSION, schema["x-kiln-protocol"].version);
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

test("each code maps to the class the schema names (Python's error_from_code makes the same)", () => {
  const classes = new Set(Object.values(codes).map(({ error }) => error));
  assert.ok(classes.size >= 15 && classes.has("LocalProtocolError") && classes.has("RemoteError"));
  for (const [code, { error }] of Object.entries(codes)) {
    // JavaScript's names carry an `Error` suffix that Python's do not.
    assert.equal(errorFromCode(code, "x").name.replace(/Error$/, ""), error.replace(/Error$/, ""), code);
  }
});

/**
 * The names a .d.ts file exports, each with whether it is a value (a class, function or
 * constant) or only a type, and the file that declares it: its own declarations, and those
 * of the files it re-exports from (`export *`, `export {…} from`).
 * @returns {Map<string, {value: boolean, file: string}>}
 */
function dtsExports(file) {
  const dts = readFileSync(file, "utf8");
  const target = (spec) => resolve(dirname(file), spec.replace(/\.js$/, ".d.ts"));
  const names = new Map();
  for (const [, kind, name] of dts.matchAll(/^export (?:declare )?(class|function|const|type|interface) (\w+)/gm)) {
    names.set(name, { value: !["type", "interface"].includes(kind), file });
  }
  for (const [, spec] of dts.matchAll(/^export \* from "([^"]+)"/gm)) {
    for (const [name, entry] of dtsExports(target(spec))) names.set(name, entry);
  }
  for (const [, name, spec] of dts.matchAll(/^export \* as (\w+) from "([^"]+)"/gm)) names.set(name, { value: true, file: target(spec) });
  for (const [, only, list, spec] of dts.matchAll(/^export (type )?\{([^}]*)\} from "([^"]+)"/gm)) {
    const there = dtsExports(target(spec));
    for (const [name, as = name] of list.split(",").map((n) => n.trim().split(/\s+as\s+/)).filter(([n]) => n)) {
      const entry = there.get(name);
      assert.ok(entry, `${file} re-exports ${name}, which ${spec} does not export`);
      names.set(as, only ? { ...entry, value: false } : entry);
    }
  }
  // `export { a };` of a name imported from elsewhere.
  const imported = new Map();
  for (const [, list, spec] of dts.matchAll(/^import (?:type )?\{([^}]*)\} from "([^"]+)"/gm)) {
    for (const name of list.split(",").map((n) => n.trim()).filter(Boolean)) imported.set(name, spec);
  }
  for (const [, list] of dts.matchAll(/^export \{([^}]*)\};/gm)) {
    for (const name of list.split(",").map((n) => n.trim()).filter(Boolean)) {
      const spec = imported.get(name);
      assert.ok(spec !== undefined, `${file} exports ${name}, imported from nowhere`);
      names.set(name, dtsExports(target(spec)).get(name));
    }
  }
  return names;
}

const indexExports = dtsExports(here("../types/index.d.ts"));
const protocolExports = dtsExports(here("../types/protocol.d.ts"));
const values = (exports) => [...exports].filter(([, { value }]) => value).map(([name]) => name);

test("index.d.ts declares everything the entry points export", () => {
  for (const name of Object.keys(nodeEntry)) assert.ok(indexExports.get(name)?.value, `types/index.d.ts does not declare ${name}`);
});

test("every runtime name index.d.ts exports exists in the Node and the browser entry", () => {
  const names = values(indexExports);
  for (const expected of ["connect", "Requestor", "CommandFailedError", "TaskTimeoutError", "ErrorCode", "errorFromCode"]) {
    assert.ok(names.includes(expected), `the parse found no ${expected}`);
  }
  for (const name of names) {
    assert.ok(name in nodeEntry, `types/index.d.ts exports ${name}, which src/node/index.js does not`);
    assert.ok(name in browserEntry, `types/index.d.ts exports ${name}, which src/browser.js does not`);
  }
  assert.deepEqual(Object.keys(browserEntry).sort(), Object.keys(nodeEntry).sort(), "both entries export the same names");
});

test("index.d.ts names the types its API speaks of", () => {
  for (const name of ["ConnectOptions", "RentOptions", "RunOptions", "RunCheckOptions", "OutputEvent", "JobOptions", "Worker",
    "ImageInfo", "PushedImage", "KilnErrorOptions", "KnownErrorCode", "Message", "ActivityInfo"]) {
    assert.equal(indexExports.get(name)?.value, false, `types/index.d.ts does not export the type ${name}`);
  }
});

/** The names of the methods and accessors `name` declares, in the .d.ts file that declares it. */
function members(exports, name) {
  const dts = readFileSync(exports.get(name).file, "utf8");
  const body = new RegExp(`export declare class ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(dts)[1];
  return new Set([...body.matchAll(/^ +(?:readonly |get |set |static |async )*(\w+)(?:<[^>]*>)?[(?:]/gm)].map((m) => m[1]));
}

test("index.d.ts declares every public method of Activity and Requestor, and none of their internals", () => {
  for (const cls of [Activity, Requestor]) {
    const declared = members(indexExports, cls.name);
    const methods = Object.getOwnPropertyNames(cls.prototype).filter((m) => !["constructor", "toString"].includes(m) && !m.startsWith("_"));
    assert.ok(methods.includes("rent") || methods.includes("stream"));
    for (const method of methods) assert.ok(declared.has(method), `types/index.d.ts: ${cls.name} lacks ${method}`);
    const internal = [...declared].filter((m) => m.startsWith("_"));
    assert.deepEqual(internal, [], `types/index.d.ts: ${cls.name} declares its internals`);
  }
});

test("map, mapUnordered, job and new Job type-check both ways round, the old order as a deprecated overload", { timeout: 60_000 }, async () => {
  // test/support/consumer.ts imports the package by name (its own package.json), as a user's
  // program does; its @ts-expect-error lines make tsc fail if a wrong call compiled.
  const project = mkdtempSync(join(tmpdir(), "kiln-consumer-"));
  try {
    const compilerOptions = { strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022", lib: ["es2022", "dom"], types: [] };
    writeFileSync(join(project, "tsconfig.json"), JSON.stringify({ compilerOptions, files: [here("support/consumer.ts")] }));
    const tsc = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin/tsc");
    const checked = await promisify(execFile)(process.execPath, [tsc, "-p", project]).catch((e) => e);
    assert.equal(checked.code ?? 0, 0, `${checked.stdout}${checked.stderr}`);
  } finally {
    rmSync(project, { recursive: true, force: true });
  }
  // Each overload's comment, and which comes first of its worker and its parts.
  const overloads = (file, name) => {
    const dts = readFileSync(here(`../types/generated/${file}`), "utf8");
    const pattern = new RegExp(String.raw`(/\*\*(?:(?!\*/)[\s\S])*\*/)\n {4}${name}(?:<[^(]*>)?\((.*)`, "g");
    return [...dts.matchAll(pattern)].map(([, doc, rest]) => [/(worker|parts):/.exec(rest)[1], /@deprecated/.test(doc)]);
  };
  for (const name of ["map", "mapUnordered", "job"]) assert.deepEqual(overloads("requestor.d.ts", name), [["worker", false], ["parts", true]], name);
  assert.deepEqual(overloads("executor.d.ts", "constructor"), [["worker", false], ["parts", true]]);
});

test("protocol.d.ts declares exactly what kiln-client/protocol exports", () => {
  for (const name of Object.keys(protocolEntry)) {
    assert.ok(protocolExports.get(name)?.value, `types/protocol.d.ts does not declare ${name}`);
  }
  for (const name of values(protocolExports)) {
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
