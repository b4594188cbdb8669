/**
 * The JS side of protocol kiln.v1, generated from `protocol/v1/schema.json` (which is
 * generated from the pydantic models), so that both languages check the same rules:
 *
 *   src/protocol/generated/validators.js    one ajv validator per message type (standalone
 *                                           code: no ajv at runtime, browsers included)
 *   src/protocol/generated/validators.d.ts  its types, for `tsc` (which skips the code itself)
 *   types/protocol.generated.d.ts           one interface per message and value model
 *   src/protocol/generated/constants.js     the protocol's name and version, its error codes
 *                                           and close codes (the schema's x-kiln-* tables)
 *   src/protocol/generated/limits.js        its default limits and fixed bounds (x-kiln-limits)
 *   src/protocol/generated/{constants,limits}.d.ts   their types
 *   types/generated/**.d.ts                 the declarations of src/ (tsc, from the JSDoc
 *                                           the type check holds to the code), without the
 *                                           members whose names start with "_" (internal),
 *                                           each overload with its own comment;
 *                                           types/index.d.ts re-exports them
 *
 *     node scripts/generate.mjs [outDir]    (`make schema` runs it; outDir defaults to js-client/)
 *
 * The output depends only on the schema, the sources' JSDoc and the locked versions of ajv,
 * json-schema-to-typescript and typescript: the same input gives byte-identical files,
 * which is what test/unit/generated.test.js holds the committed files to.
 */

import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Ajv2020, _ } from "ajv/dist/2020.js";
import standalone from "ajv/dist/standalone/index.js";
import { compile } from "json-schema-to-typescript";

import { FORMAT, pathProblem } from "../src/protocol/paths.js";

const PACKAGE = fileURLToPath(new URL("..", import.meta.url));
const SCHEMA = join(PACKAGE, "../protocol/v1/schema.json");
const HEADER =
  "// Generated from protocol/v1/schema.json by js-client/scripts/generate.mjs: do not edit.\n" +
  "// Run `make schema` after changing the models in python/kiln/protocol/.\n";

/**
 * The runtime helpers ajv's standalone code `require`s that may be copied into it: each
 * is one self-contained function. Copying keeps the generated module free of imports
 * outside `src/`, which is all a browser is served (`tests/docker/test_browser.py`).
 */
const INLINED_HELPERS = new Set(["ucs2length", "equal"]);

/** @typedef {Record<string, any>} Schema a JSON Schema, as pydantic writes them */
/** @typedef {{model: string, type: string}} MessageModel a `$defs` entry and its `type` literal */

/**
 * Every message model of the schema: the `$defs` entries with a `type` constant.
 * @param {Schema} schema
 * @returns {MessageModel[]} in the schema's (sorted) order
 */
function messageModels(schema) {
  const models = Object.entries(schema.$defs)
    .filter(([, def]) => typeof def.properties?.type?.const === "string")
    .map(([model, def]) => ({ model, type: def.properties.type.const }));
  // messages.js dispatches on `type` itself, which is only right while `type` is the
  // schema's discriminator and every message is in its mapping.
  const mapping = Object.fromEntries(models.map(({ model, type }) => [type, `#/$defs/${model}`]));
  if (schema.discriminator?.propertyName !== "type" || !sameEntries(schema.discriminator.mapping, mapping)) {
    throw new Error("schema.json: the messages are no longer a union discriminated on `type`");
  }
  return models;
}

/** @param {Record<string, string>} a @param {Record<string, string>} b */
function sameEntries(a, b) {
  return JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
}

/** @param {Schema} schema @param {MessageModel[]} models */
function validatorsCode(schema, models) {
  const ajv = new Ajv2020({
    allErrors: true, // every problem, as pydantic lists them
    useDefaults: true, // a parsed message has every field, as a pydantic model has
    strict: true,
    unicodeRegExp: true,
    code: { source: true, esm: true, lines: true, formats: _`formats` },
  });
  // Only the generator calls this one; the generated code calls `formats` (see below).
  ajv.addFormat(FORMAT, (/** @type {string} */ path) => pathProblem(path) === null);
  // Only the models are compiled, and messages.js picks one by `type`: ajv refuses the
  // `mapping` of pydantic's discriminator, and a plain oneOf would try every model on
  // every message (reporting each one's problems, filling in other models' defaults).
  ajv.addSchema({ $schema: schema.$schema, $id: schema.$id, $defs: schema.$defs });
  const refs = Object.fromEntries(models.map(({ model }) => [`validate${model}`, `${schema.$id}#/$defs/${model}`]));
  // A CommonJS module: what the import gets is module.exports, the function is its .default.
  const code = inlineHelpers(standalone.default(ajv, refs).replace(/^"use strict";\n/, ""));
  const map = models.map(({ model, type }) => `  ${type}: validate${model},`).join("\n");
  return `${HEADER}
import { FORMAT, pathProblem } from "../paths.js";

/** The formats JSON Schema cannot say, by name, as the code below calls them. */
const formats = { [FORMAT]: (path) => pathProblem(path) === null };

${code}
/** The validator of every message, by its \`type\`. */
export const VALIDATORS = Object.freeze({
${map}
});
`;
}

/**
 * ajv's code with each `require("ajv/dist/runtime/<helper>").default` replaced by the helper's source.
 * @param {string} code
 */
function inlineHelpers(code) {
  const require = createRequire(import.meta.url);
  const inlined = code.replace(/require\("ajv\/dist\/runtime\/(\w+)"\)\.default/g, (_call, helper) => {
    if (!INLINED_HELPERS.has(helper)) {
      throw new Error(`ajv's code needs its runtime helper '${helper}', which is not known to be self-contained`);
    }
    return require(`ajv/dist/runtime/${helper}`).default.toString();
  });
  if (/\brequire\(/.test(inlined)) throw new Error("ajv's code requires a module the browser cannot load");
  return inlined;
}

/** @param {MessageModel[]} models */
function validatorTypes(models) {
  const names = ["Message", ...models.map(({ model }) => model)].map((name) => `  ${name},\n`).join("");
  const exports = models.map(({ model }) => `export declare const validate${model}: Validator<${model}>;`).join("\n");
  return `${HEADER}
import type {
${names}} from "../../../types/protocol.generated.js";

/** One problem an ajv validator found (ajv's \`ErrorObject\`, without its verbose fields). */
export interface ValidationProblem {
  keyword: string;
  /** A JSON Pointer to the value with the problem: "" for the message, "/demand/cpus" for a field. */
  instancePath: string;
  schemaPath: string;
  params: Record<string, any>;
  /** Set when the problem is with an object key (\`propertyNames\`). */
  propertyName?: string;
  message?: string;
}

/** Checks a decoded JSON value, filling in the defaults of missing fields in place. */
export interface Validator<T> {
  (data: unknown): data is T;
  /** Why the last call returned false (null after a true). */
  errors: ValidationProblem[] | null;
}

export declare const VALIDATORS: { readonly [K in Message["type"]]: Validator<Extract<Message, { type: K }>> };

${exports}
`;
}

/**
 * The schema of the messages as `parse` returns them, for json-schema-to-typescript:
 *
 * - a field with a default is required: a parsed message always has it (the validators
 *   fill it in), so readers need no `?? default` of their own. Messages being built
 *   are written as object literals and checked by `serialize`, which takes any object;
 * - the root is named `Message`, and only models keep their `title`: a titled field
 *   would become a type alias of its own (`Activity`, `Activity1`, ...).
 * @param {Schema} schema
 * @returns {Schema}
 */
function parsedSchema(schema) {
  const copy = structuredClone(schema);
  const root = { title: "Message", oneOf: copy.oneOf, $defs: copy.$defs };
  for (const def of Object.values(copy.$defs)) {
    for (const sub of subschemas(def)) delete sub.title;
    const withDefault = Object.keys(def.properties ?? {}).filter((field) => "default" in def.properties[field]);
    if (withDefault.length > 0) def.required = [...new Set([...(def.required ?? []), ...withDefault])];
  }
  return root;
}

/**
 * Every schema nested in `schema` (not `schema` itself), at the keywords these models use.
 * @param {Schema} schema
 * @returns {Generator<Schema>}
 */
function* subschemas(schema) {
  const children = [
    ...Object.values(schema.properties ?? {}),
    ...(schema.anyOf ?? []),
    ...(schema.oneOf ?? []),
    ...(schema.allOf ?? []),
    ...[schema.items, schema.additionalProperties, schema.propertyNames].filter((s) => typeof s === "object"),
  ];
  for (const child of children) {
    yield child;
    yield* subschemas(child);
  }
}

/** @param {Schema} schema */
async function typesCode(schema) {
  return compile(parsedSchema(schema), "Message", {
    bannerComment: HEADER.trimEnd(),
    additionalProperties: false,
    ignoreMinAndMaxItems: true, // lengths are checked by the validators, not spelled as tuples
    unknownAny: true, // a field of any type (pydantic's Any) must be checked before use
  });
}

/**
 * One JSDoc comment, indented by `indent`.
 * @param {string} text
 * @param {string} [indent]
 */
function doc(text, indent = "") {
  return `${indent}/** ${text.replaceAll("*/", "*\\/")} */\n`;
}

/**
 * `name` as a JavaScript constant's: upper case (the schema's names are snake case).
 * @param {string} name
 */
const constantName = (name) => {
  if (!/^[a-z][a-z0-9_]*$/.test(name)) throw new Error(`schema.json: ${JSON.stringify(name)} is no snake-case name`);
  return name.toUpperCase();
};

/**
 * The modules of the schema's `x-kiln-*` tables: the protocol's version, error codes, close
 * codes (constants.js) and limits (limits.js), each with its .d.ts.
 * @param {Schema} schema
 * @returns {Record<string, string>}
 */
function constantsCode(schema) {
  const protocol = schema["x-kiln-protocol"];
  /** @type {Record<string, {meaning: string, sent_by: string[], error: string}>} */
  const codes = schema["x-kiln-error-codes"];
  /** @type {Record<string, {code: number, meaning: string}>} */
  const closeCodes = schema["x-kiln-close-codes"];
  /** @type {Record<string, number>} */
  const limits = schema["x-kiln-limits"];
  if ([protocol, codes, closeCodes, limits].some((table) => typeof table !== "object")) {
    throw new Error("schema.json lacks an x-kiln-* table: run `make schema`");
  }
  const sentBy = (/** @type {string[]} */ who) =>
    who.includes("client") && who.length === 1 ? "raised by the client itself, never sent" : `sent by: ${who.join(", ")}`;
  const errorCodes = Object.entries(codes)
    .map(([code, { meaning, sent_by }]) => doc(`${meaning} (${sentBy(sent_by)})`, "  ") + `  ${constantName(code)}: "${code}",\n`)
    .join("");
  const closes = Object.entries(closeCodes)
    .map(([name, { code, meaning }]) => doc(meaning, "  ") + `  ${constantName(name)}: ${code},\n`)
    .join("");
  const version = `${HEADER}
/** The name of the protocol, offered as the WebSocket subprotocol. */
export const PROTOCOL_NAME = ${JSON.stringify(protocol.name)};
/** The "MAJOR.MINOR" version this side speaks. */
export const PROTOCOL_VERSION = ${JSON.stringify(protocol.version)};
export const MAJOR_VERSION = ${protocol.major};
/** The minor version this side speaks (a hub may welcome it at a lower one). */
export const MINOR_VERSION = ${protocol.minor};
`;
  const constants = `${version}
/**
 * The stable error codes, by name (\`ErrorCode.NO_MATCH\` is "no_match"). A code never
 * changes meaning once published; a later minor version may add codes, so treat an unknown
 * one like \`internal\`.
 * @type {Readonly<Record<string, string>>}
 */
export const ErrorCode = Object.freeze({
${errorCodes}});

/** Every known code, for membership tests. */
export const ERROR_CODES = Object.freeze(new Set(Object.values(ErrorCode)));

/** The WebSocket close codes of the protocol, by name: RFC 6455's it gives a meaning, and its own (4000-4999). */
export const CloseCode = Object.freeze({
${closes}});
`;
  const known = Object.keys(codes).map((code) => `  | "${code}"\n`).join("");
  const closeTypes = Object.entries(closeCodes)
    .map(([name, { code, meaning }]) => doc(meaning, "  ") + `  readonly ${constantName(name)}: ${code};\n`)
    .join("");
  const constantTypes = `${HEADER}
export declare const PROTOCOL_NAME: ${JSON.stringify(protocol.name)};
export declare const PROTOCOL_VERSION: string;
export declare const MAJOR_VERSION: number;
/** The minor version this side speaks (a hub may welcome it at a lower one). */
export declare const MINOR_VERSION: number;

/** Every error code of protocol ${protocol.name}. */
export type KnownErrorCode =
${known};

/** The stable error codes, by name (\`ErrorCode.NO_MATCH\` is "no_match"). */
export declare const ErrorCode: Readonly<Record<string, KnownErrorCode>>;
/** Every known code, for membership tests. */
export declare const ERROR_CODES: ReadonlySet<string>;

/** The WebSocket close codes of the protocol, by name. */
export declare const CloseCode: {
${closeTypes}};
`;
  const limitLines = Object.entries(limits).map(([name, value]) => `export const ${constantName(name)} = ${value};\n`);
  const limitTypes = Object.keys(limits).map((name) => `export declare const ${constantName(name)}: number;\n`);
  const intro = `
// The default limits of protocol ${protocol.name} (the hub announces those in force in \`welcome\`,
// and those are the ones a client obeys), and the bounds no \`welcome\` changes.
`;
  return {
    "src/protocol/generated/constants.js": constants,
    "src/protocol/generated/constants.d.ts": constantTypes,
    "src/protocol/generated/limits.js": `${HEADER}${intro}${limitLines.join("")}`,
    "src/protocol/generated/limits.d.ts": `${HEADER}${intro}${limitTypes.join("")}`,
  };
}

/**
 * Every file under `dir`, as paths relative to it.
 * @param {string} dir
 * @returns {Promise<string[]>}
 */
async function filesUnder(dir) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

/**
 * A declaration file emitted from src/ made fit for types/generated/: the JSDoc's
 * `../types/x.js` (written from src/, one level below js-client/) becomes `../x.js` (from
 * types/generated/, one level below types/), and the internal members go.
 * @param {string} dts
 */
function publicDeclarations(dts) {
  return withoutInternalMembers(dts.replace(/(["'](?:\.\.\/)+)types\//g, "$1"));
}

/**
 * `dts` without the class members whose names start with "_" (and their comments): the
 * sources' convention for what is internal. tsc prints one member per item, indented by 4,
 * its continuation lines further in or starting with a closing bracket.
 * @param {string} dts
 */
function withoutInternalMembers(dts) {
  const comment = (/** @type {string} */ line) => /^ {4}(\/\*\*| +\*)/.test(line);
  /** @type {{lines: string[], member: string | null}[]} */
  const items = [];
  for (const line of dts.split("\n")) {
    const last = items.at(-1);
    if (!line.startsWith("    ")) {
      items.push({ lines: [line], member: line }); // not in a class body
    } else if (/^ {4}\/\*\*/.test(line) || last === undefined) {
      items.push({ lines: [line], member: null }); // a member's comment begins
    } else if (comment(line) || !/^ {4}[^ })\]|&]/.test(line)) {
      last.lines.push(line); // a comment or member goes on
    } else if (last.member === null) {
      last.lines.push(line); // the member its comment was about
      last.member = line;
    } else {
      items.push({ lines: [line], member: line });
    }
  }
  const internal = /^ {4}(?:(?:static|readonly|get|set|async|private|protected) )*_\w*[<(:?;]/;
  return items
    .filter(({ member }) => member === null || !internal.test(member))
    .flatMap(({ lines }) => lines)
    .join("\n");
}

/** One JSDoc comment of a class member in src/ (two spaces in), and the line break after it. */
const MEMBER_COMMENT = String.raw`^  \/\*\*(?:(?!\*\/)[\s\S])*\*\/\n`;

/**
 * The comment of each overload a JSDoc `@overload` declares in `source`, by class and member
 * ("Job.constructor", "Requestor.map"), in order and laid out as in a .d.ts (without the tag).
 * @param {string} source
 * @returns {Map<string, string[]>}
 */
function overloadComments(source) {
  const pattern = new RegExp(String.raw`^(?:export )?class (\w+)|((?:${MEMBER_COMMENT})+)^  (?:static |async |get |set )*\*?(\w+)\(`, "gm");
  /** @type {Map<string, string[]>} */
  const found = new Map();
  let cls = "";
  for (const [, declared, comments, member] of source.matchAll(pattern)) {
    if (declared !== undefined) {
      cls = declared;
      continue;
    }
    const overloads = (comments.match(new RegExp(MEMBER_COMMENT, "gm")) ?? []).filter((c) => /^ +\* @overload$/m.test(c));
    if (overloads.length > 0) {
      const layout = (/** @type {string} */ c) => c.replace(/^ +\* @overload\n/m, "").replace(/^/gm, "  ").trimEnd();
      found.set(`${cls}.${member}`, overloads.map(layout));
    }
  }
  return found;
}

/**
 * `dts` with each overload's own comment from `comments` (overloadComments): tsc writes a
 * method's overloads each with the comments of them all, or with none (a constructor's, an
 * async method's), and a deprecated overload must be told apart from the others.
 * @param {string} dts
 * @param {Map<string, string[]>} comments
 */
function withOverloadComments(dts, comments) {
  /** @type {string[]} */
  const out = [];
  /** @type {Map<string, number>} */
  const written = new Map();
  let cls = "";
  for (const line of dts.split("\n")) {
    cls = /^(?:export )?declare class (\w+)/.exec(line)?.[1] ?? cls;
    const member = /^ {4}(?:static )?(\w+)(?:<[^(]*>)?\(/.exec(line)?.[1];
    const own = member === undefined ? undefined : comments.get(`${cls}.${member}`);
    if (own !== undefined) {
      while (/^ {4}(?:\/\*\*| +\*)/.test(out.at(-1) ?? "")) out.pop();
      const index = written.get(`${cls}.${member}`) ?? 0;
      written.set(`${cls}.${member}`, index + 1);
      if (index >= own.length) throw new Error(`tsc declared more overloads of ${cls}.${member} than its JSDoc`);
      out.push(own[index]);
    }
    out.push(line);
  }
  for (const [key, own] of comments) {
    if (written.get(key) !== own.length) throw new Error(`tsc declared ${written.get(key) ?? 0} overloads of ${key}, its JSDoc ${own.length}`);
  }
  return out.join("\n");
}

/**
 * The declarations of src/ (tsc, from their JSDoc) as types/generated/ holds them, with
 * the .d.ts files of src/protocol/generated/ they import.
 * @returns {Promise<Record<string, string>>}
 */
async function declarationsCode() {
  const out = await mkdtemp(join(tmpdir(), "kiln-declarations-"));
  try {
    const typescript = dirname(createRequire(import.meta.url).resolve("typescript/package.json"));
    const tsc = join(typescript, "bin/tsc");
    await promisify(execFile)(process.execPath, [tsc, "-p", join(PACKAGE, "tsconfig.types.json"), "--outDir", out]).catch(
      (/** @type {any} */ e) => {
        throw new Error(`tsc could not emit the declarations of src/:\n${e.stdout}${e.stderr}`);
      },
    );
    // The declarations written beside src/protocol/generated/*.js are re-exported, not copied:
    // tsc emits nothing for what it only imports.
    const generated = join(PACKAGE, "src/protocol/generated");
    const declared = (await readdir(generated)).filter((name) => name.endsWith(".d.ts")).sort();
    /** @type {Record<string, string>} */
    const files = {};
    for (const name of declared) {
      const module = name.replace(/\.d\.ts$/, ".js");
      files[`types/generated/protocol/generated/${name}`] =
        `// Generated by scripts/generate.mjs: the declarations of src/protocol/generated/${module}.\nexport * from "../../../../src/protocol/generated/${module}";\n`;
    }
    for (const path of (await filesUnder(out)).sort()) {
      const source = await readFile(join(PACKAGE, "src", path.replace(/\.d\.ts$/, ".js")), "utf8");
      const dts = withOverloadComments(await readFile(join(out, path), "utf8"), overloadComments(source));
      files[`types/generated/${path}`] = publicDeclarations(dts);
    }
    return files;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** @param {string} [outDir] */
async function main(outDir = PACKAGE) {
  const schema = JSON.parse(await readFile(SCHEMA, "utf8"));
  const models = messageModels(schema);
  const files = {
    "src/protocol/generated/validators.js": validatorsCode(schema, models),
    "src/protocol/generated/validators.d.ts": validatorTypes(models),
    "types/protocol.generated.d.ts": await typesCode(schema),
    ...constantsCode(schema),
  };
  await writeAll(outDir, files);
  // tsc reads what was just written to src/protocol/generated/ (when outDir is the package),
  // and the types/generated/ of the run before (types/protocol.d.ts re-exports from it): a
  // declaration names the types it uses by where they are, so that does not change the output.
  const declarations = await declarationsCode();
  await rm(join(outDir, "types/generated"), { recursive: true, force: true });
  await writeAll(outDir, declarations);
}

/** @param {string} outDir @param {Record<string, string>} files */
async function writeAll(outDir, files) {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(outDir, path)), { recursive: true });
    await writeFile(join(outDir, path), text);
  }
}

await main(process.argv[2]);
