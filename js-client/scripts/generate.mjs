/**
 * The JS side of protocol kiln.v1, generated from `protocol/v1/schema.json` (which is
 * generated from the pydantic models), so that both languages check the same rules:
 *
 *   src/protocol/generated/validators.js    one ajv validator per message type (standalone
 *                                           code: no ajv at runtime, browsers included)
 *   src/protocol/generated/validators.d.ts  its types, for `tsc` (which skips the code itself)
 *   types/protocol.generated.d.ts           one interface per message and value model
 *
 *     node scripts/generate.mjs [outDir]    (`make schema` runs it; outDir defaults to js-client/)
 *
 * The output depends only on the schema and the locked versions of ajv and
 * json-schema-to-typescript: the same input gives byte-identical files, which is what
 * test/unit/generated.test.js holds the committed files to.
 */

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

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
 * outside `src/`, which is all a browser is served (`tests/test_browser.py`).
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

/** @param {string} [outDir] */
async function main(outDir = PACKAGE) {
  const schema = JSON.parse(await readFile(SCHEMA, "utf8"));
  const models = messageModels(schema);
  const files = {
    "src/protocol/generated/validators.js": validatorsCode(schema, models),
    "src/protocol/generated/validators.d.ts": validatorTypes(models),
    "types/protocol.generated.d.ts": await typesCode(schema),
  };
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(outDir, path)), { recursive: true });
    await writeFile(join(outDir, path), text);
  }
}

await main(process.argv[2]);
