"""Word frequencies over a text corpus: split it, count each part in a container, merge.

    python examples/word_freq.py --hub ws://127.0.0.1:7465 [--image kiln-word-freq:1] [--report job.html] [FILE ...]

With no FILE, the corpus is the license texts every Debian machine carries. Each part is
counted by ``word-freq``, the script of the job's image (``examples/wordcount-image/``):
``make demo`` builds it and pushes it to the hub; by hand, with a hub running::

    DOCKER_BUILDKIT=0 docker build -t kiln-word-freq:1 examples/wordcount-image
    kiln image push kiln-word-freq:1 --hub ws://127.0.0.1:7465

With ``--report job.html`` it writes the job's timeline there (open it in a browser): each
part's attempts on each provider, the summary, and the retries with why.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path

import kiln

IMAGE = "kiln-word-freq:1"
# word-freq (the image's script) lower-cases every word and counts it, as `uniq -c` writes.
COUNT = "mkdir -p /golem/output && word-freq /golem/input/part.txt > /golem/output/counts.txt"


def corpus(files: list[str]) -> str:
    paths = [Path(f) for f in files] or sorted(Path("/usr/share/common-licenses").glob("*"))
    paths = [p for p in paths if p.is_file()] or sorted(Path(__file__).resolve().parent.parent.glob("*.md"))
    return "\n".join(p.read_text(errors="replace") for p in paths)


def split(text: str, parts: int) -> list[bytes]:
    """``parts`` pieces of ``text``, cut at line ends so no word is split."""
    lines = text.splitlines(keepends=True)
    size = max(len(lines) // parts, 1)
    return ["".join(lines[i : i + size]).encode() for i in range(0, len(lines), size)]


async def count_words(act: kiln.Activity, part: bytes) -> Counter[str]:
    await act.send_bytes(part, "/golem/input/part.txt")
    result = await act.run(["sh", "-c", COUNT], timeout=60)
    if result.exit_code != 0:
        raise RuntimeError(f"counting failed: {result.stderr}")
    counts: Counter[str] = Counter()
    for line in (await act.download_bytes("/golem/output/counts.txt")).decode().splitlines():
        number, _, word = line.strip().partition(" ")
        if word:
            counts[word] += int(number)
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", default="ws://127.0.0.1:7465")
    parser.add_argument("--image", default=IMAGE, help=f"an image with word-freq on its PATH (default {IMAGE})")
    parser.add_argument("--parts", type=int, default=24)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--report", metavar="PATH", help="write the job's HTML timeline to PATH")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()

    text = corpus(args.files)
    parts = split(text, args.parts)
    async with kiln.connect(args.hub, name="word-freq") as requestor:
        demand = kiln.Demand(cpus=0.5, memory="128MiB")
        job = requestor.job(
            count_words, parts, image=args.image, demand=demand, max_providers=4, retries=2, task_timeout=60
        )
        with kiln.ProgressView(job, summary=False, report=args.report):  # a live bar when run in a terminal
            per_part = await job.run()
    total = sum(per_part, Counter())
    local = Counter(w.lower() for w in "".join(c if c.isascii() and c.isalpha() else " " for c in text).split())
    print(f"\n{len(text):,} characters in {len(parts)} parts; {sum(total.values()):,} words, {len(total):,} distinct")
    for word, n in total.most_common(args.top):
        print(f"{n:8,}  {word}")
    print("matches a local count:", "yes" if total == local else "NO")
    print("\n".join(job.summary.lines()))


if __name__ == "__main__":
    asyncio.run(main())
