"""Write the JSON Schema of protocol kiln.v1: ``python -m kiln.protocol.schema > protocol/v1/schema.json``."""

from __future__ import annotations

import sys

import orjson

from kiln.protocol.messages import json_schema


def render() -> bytes:
    return orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
