"""A CPU-heavy job: find which number's SHA-256 matches a target, searching a range in parts.

    python examples/sha_search.py --hub ws://127.0.0.1:7465 [--space 4000] [--parts 8]

The secret is picked here, only its hash is sent; the answer is checked locally.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets

import kiln

IMAGE = "kiln-busybox:latest"


async def search(act: kiln.Activity, job: tuple[str, int, int]) -> int | None:
    target, start, stop = job
    script = (
        f"i={start}; while [ $i -lt {stop} ]; do "
        f'h=$(printf "kiln-%d" $i | sha256sum); '
        f'if [ "${{h%% *}}" = "{target}" ]; then echo $i; exit 0; fi; i=$((i + 1)); done'
    )
    result = await act.run(["sh", "-c", script], timeout=600)
    if result.exit_code != 0:
        raise RuntimeError(result.stderr)
    return int(result.stdout) if result.stdout.strip() else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", default="ws://127.0.0.1:7465")
    parser.add_argument("--space", type=int, default=4000)
    parser.add_argument("--parts", type=int, default=8)
    args = parser.parse_args()

    secret = secrets.randbelow(args.space)
    target = hashlib.sha256(f"kiln-{secret}".encode()).hexdigest()
    step = -(-args.space // args.parts)
    jobs = [(target, start, min(start + step, args.space)) for start in range(0, args.space, step)]
    async with kiln.connect(args.hub, name="sha-search") as requestor:
        results = await requestor.map(search, jobs, image=IMAGE, demand=kiln.Demand(cpus=1))
    found = [n for n in results if n is not None]
    print(
        f"target {target[:16]}...: found {found}; the secret was {secret}: {'right' if found == [secret] else 'WRONG'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
