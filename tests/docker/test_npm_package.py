"""The npm package as a stranger gets it: `npm pack` in js-client, then a fresh Node project
`npm install`s the tarball (its dependency `ws` from the registry) and a script there imports
`kiln-client` by name, connects to a real hub, rents kiln-busybox on a real provider and runs
a command. Beside it: the uPlot the hub's dashboard ships is the one js-client's npm installs."""

from __future__ import annotations

import json
import os
import subprocess
from importlib.resources import files
from pathlib import Path

import orjson
import pytest

from tests.conftest import IMAGE, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """\
import { connect } from "kiln-client";

const requestor = await connect(process.argv[2]);
try {
  const act = await requestor.rent({ image: process.argv[3], demand: { cpus: 1, memory: "256MiB" } });
  const result = await act.run(["sh", "-c", "echo hello from $(uname -s)"], { timeoutMs: 30000 });
  console.log(JSON.stringify({ exitCode: result.exitCode, stdout: result.stdout, provider: act.provider }));
  await act.release();
} finally {
  await requestor.close();
}
"""


CONSUMER = """\
import { connect, ErrorCode, KilnError, NoMatchError, TaskFailedError, parseSize } from "kiln-client";
import type {
  Activity, ConnectOptions, ImageInfo, JobOptions, KnownErrorCode, OutputEvent, RentOptions, Result, RunCheckOptions,
  Worker,
} from "kiln-client";
import { CloseCode, MAX_TEXT, limits, parse } from "kiln-client/protocol";
import type { Message } from "kiln-client/protocol";

const options: ConnectOptions = { token: "t", reconnect: false };
const requestor = await connect("ws://127.0.0.1:7465", options);
const rent: RentOptions = { image: "kiln-busybox:latest", demand: { cpus: 1, memory: "256MiB" } };
const act: Activity = await requestor.rent(rent);
const check: RunCheckOptions = { check: true, timeoutMs: 1000 };
const result: Result = await act.run(["true"], check);
const exit: number = result.exitCode;
for await (const event of act.stream(["echo", "hi"])) {
  const e: OutputEvent = event;
  if (e.kind === "exit") console.log(e.result.ok);
  else console.log(e.text);
}
const value = await act.downloadJson<{ n: number }>("/golem/output/x.json");
const n: number = value.n;
const worker: Worker<number, number> = async (a, part, context) => part + context.attempt + a.provider.length;
const job: JobOptions = { image: "kiln-busybox:latest" };
const results: number[] = await requestor.map(worker, [1, 2], job);
const old: number[] = await requestor.map([1, 2], worker, job); // the deprecated order still compiles
const images: ImageInfo[] = (await requestor.listImages()).images;
const code: KnownErrorCode = "no_match";
try {
  await requestor.close();
} catch (e) {
  if (e instanceof NoMatchError || (e instanceof KilnError && e.code === ErrorCode.TIMEOUT)) console.log(e.provider);
  if (e instanceof TaskFailedError) console.log(e.index, e.attempts);
}
const handshake: 4003 = CloseCode.HANDSHAKE;
const message: Message = parse('{"type":"credit","stream":1,"chunks":1}');
console.log(exit, n, results, old, images, code, handshake, message, limits.CHUNK_BYTES, MAX_TEXT, parseSize("1GiB"));
"""
"""A TypeScript program using the package's API and its type names, checked against its declarations."""

CONSUMER_TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "module": "nodenext",
        "moduleResolution": "nodenext",
        "target": "es2022",
        "lib": ["es2022", "dom"],
        "types": [],  # no @types/node: a browser project must type-check too
    },
    "files": ["consumer.ts"],
}


def npm(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["npm", "--no-audit", "--no-fund", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )
    assert done.returncode == 0, f"npm {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The packed js-client, and the paths it holds."""
    out = tmp_path_factory.mktemp("npm-pack")
    [packed] = json.loads(npm("pack", "--json", "--pack-destination", str(out), cwd=ROOT / "js-client"))
    return out / packed["filename"], [f["path"] for f in packed["files"]]


def test_the_tarball_holds_the_library_its_types_and_the_license(tarball: tuple[Path, list[str]]) -> None:
    path, files = tarball
    version = json.loads((ROOT / "js-client" / "package.json").read_text())["version"]
    assert path.name == f"kiln-client-{version}.tgz"
    assert {"LICENSE", "README.md", "package.json", "src/node/index.js", "src/browser.js", "types/index.d.ts"} <= set(
        files
    )
    assert all(f.startswith(("src/", "types/")) or f in ("LICENSE", "README.md", "package.json") for f in files), files


def test_a_fresh_node_project_installs_the_tarball_and_runs_a_command(
    tarball: tuple[Path, list[str]], cluster: Cluster, tmp_path: Path
) -> None:
    provider = cluster.start_provider("npm")
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "a-kiln-user", "private": True, "type": "module"}))
    npm("install", str(tarball[0]), cwd=project)
    (project / "run.mjs").write_text(SCRIPT)
    done = subprocess.run(
        ["node", "run.mjs", cluster.url, IMAGE], cwd=project, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"exitCode": 0, "stdout": "hello from Linux\n", "provider": provider}
    installed = json.loads((project / "node_modules" / "kiln-client" / "package.json").read_text())
    assert installed["name"] == "kiln-client"
    assert (project / "node_modules" / "ws").is_dir(), "its dependency came from the registry"


def test_a_typescript_consumer_type_checks_against_the_declarations(
    tarball: tuple[Path, list[str]], tmp_path: Path
) -> None:
    assert "types/generated/node/index.d.ts" in tarball[1]
    project = tmp_path / "typed"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "a-typed-kiln-user", "private": True, "type": "module"}))
    npm("install", str(tarball[0]), cwd=project)
    (project / "tsconfig.json").write_text(json.dumps(CONSUMER_TSCONFIG))
    tsc = ROOT / "js-client" / "node_modules" / "typescript" / "bin" / "tsc"
    (project / "consumer.ts").write_text(CONSUMER)
    checked = subprocess.run(["node", str(tsc), "-p", "."], cwd=project, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check can fail: a misuse of the API is a type error.
    (project / "consumer.ts").write_text(CONSUMER + "const wrong: string = result.exitCode;\nawait act.nope();\n")
    checked = subprocess.run(["node", str(tsc), "-p", "."], cwd=project, capture_output=True, text=True, check=False)
    assert checked.returncode != 0
    assert "Type 'number' is not assignable to type 'string'" in checked.stdout
    assert "Property 'nope' does not exist on type 'Activity'" in checked.stdout


DASHBOARD = files("kiln.hub.dashboard")
VENDORED = {
    "uPlot.iife.min.js": "dist/uPlot.iife.min.js",
    "uPlot.min.css": "dist/uPlot.min.css",
    "uPlot.LICENSE": "LICENSE",
}


def test_the_vendored_uplot_is_the_one_npm_installs() -> None:
    """`make dashboard-assets` copied it from js-client's pinned devDependency: the same bytes."""
    installed = ROOT / "js-client" / "node_modules" / "uplot"
    assert installed.is_dir(), "js-client/node_modules has no uplot: npm ci in js-client (make test does)"
    pinned = orjson.loads((ROOT / "js-client" / "package.json").read_bytes())["devDependencies"]["uplot"]
    assert orjson.loads((installed / "package.json").read_bytes())["version"] == pinned
    for name, source in VENDORED.items():
        shipped = DASHBOARD.joinpath("vendor", name).read_bytes()
        assert shipped == (installed / source).read_bytes(), f"vendor/{name}: run make dashboard-assets"
