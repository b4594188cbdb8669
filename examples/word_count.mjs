#!/usr/bin/env node
// Word frequencies over a text corpus with kiln-client: split it, count each part in a
// container on the providers, merge the counts, print the top words.
//
//     node examples/word_count.mjs --hub ws://127.0.0.1:7465 [--parts 24] [--top 15] [FILE ...]
//
// With no FILE, the corpus is the license texts every Debian machine carries.
// (Outside this repository, import from "kiln-client" instead of the relative path.)
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { connect, KilnError } from "../js-client/src/node/index.js";

const IMAGE = "kiln-busybox:latest";
// Lower-case every word and count it; busybox tr, sort and uniq are all the container needs.
const COUNT =
  "mkdir -p /golem/output && tr -cs 'A-Za-z' '\\n' < /golem/input/part.txt | tr 'A-Z' 'a-z' | sort | uniq -c" +
  " > /golem/output/counts.txt";

function corpus(files) {
  const licenses = "/usr/share/common-licenses";
  const paths = files.length > 0 ? files : readdirSync(licenses).sort().map((f) => join(licenses, f));
  return paths
    .filter((p) => statSync(p).isFile())
    .map((p) => readFileSync(p, "utf8"))
    .join("\n");
}

/** `parts` pieces of `text`, cut at line ends so no word is split. */
function split(text, parts) {
  const lines = text.split(/(?<=\n)/);
  const size = Math.max(Math.floor(lines.length / parts), 1);
  const pieces = [];
  for (let i = 0; i < lines.length; i += size) pieces.push(lines.slice(i, i + size).join(""));
  return pieces;
}

/** The worker: one part in, its word counts out (a Map). */
async function countWords(act, part, { signal }) {
  await act.sendBytes(part, "/golem/input/part.txt", { signal });
  const result = await act.run(["sh", "-c", COUNT], { timeoutMs: 60_000, signal });
  if (result.exitCode !== 0) throw new Error(`counting failed: ${result.stderr}`);
  const counts = new Map();
  const text = new TextDecoder().decode(await act.downloadBytes("/golem/output/counts.txt", { signal }));
  for (const line of text.split("\n")) {
    const [number, word] = line.trim().split(/\s+/);
    if (word) counts.set(word, (counts.get(word) ?? 0) + Number(number));
  }
  return counts;
}

function localCount(text) {
  const counts = new Map();
  for (const word of text.toLowerCase().split(/[^a-z]+/)) if (word) counts.set(word, (counts.get(word) ?? 0) + 1);
  return counts;
}

async function main() {
  const { values, positionals } = parseArgs({
    options: {
      hub: { type: "string", default: "ws://127.0.0.1:7465" },
      parts: { type: "string", default: "24" },
      top: { type: "string", default: "15" },
    },
    allowPositionals: true,
  });
  const text = corpus(positionals);
  const parts = split(text, Number(values.parts));
  const requestor = await connect(values.hub, { name: "word-count-js" });
  let perPart;
  const started = Date.now();
  try {
    perPart = await requestor.map(countWords, parts, {
      image: IMAGE,
      demand: { cpus: 0.5, memory: "128MiB" },
      maxProviders: 4,
      retries: 2,
      taskTimeoutMs: 60_000,
    });
  } finally {
    await requestor.close();
  }
  const total = new Map();
  for (const counts of perPart) for (const [word, n] of counts) total.set(word, (total.get(word) ?? 0) + n);
  const words = [...total.values()].reduce((a, b) => a + b, 0);
  console.log(`${text.length.toLocaleString("en")} characters in ${parts.length} parts; ` +
    `${words.toLocaleString("en")} words, ${total.size.toLocaleString("en")} distinct; ${Date.now() - started} ms`);
  const top = [...total].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, Number(values.top));
  for (const [word, n] of top) console.log(`${n.toLocaleString("en").padStart(8)}  ${word}`);
  const local = localCount(text);
  const same = local.size === total.size && [...local].every(([w, n]) => total.get(w) === n);
  console.log("matches a local count:", same ? "yes" : "NO");
  if (!same) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e instanceof KilnError ? `kiln error [${e.code}]: ${e.message}` : e);
  process.exitCode = 1;
});
