"""Runs the fakesnow server (PyPI) as the local Snowflake stand-in, with these adjustments.

1. Persistence: fakesnow's server keeps its databases in memory unless each client login asks
   for a path. Here the shared instance is opened on --db-path, so the warehouse survives a
   restart of the stand-in (the outage test stops and restarts it).
2. Result format: fakesnow answers SELECT and DDL statements in Arrow (rowsetBase64). The real
   service answers this client in JSON (rowset of strings), which is all floe's Snowflake
   client reads, so Arrow answers are reshaped into Snowflake's JSON rowset encoding.
3. Errors: Snowflake's failure answers carry the failed query's id in `data.queryId`; fakesnow's
   omit it, which clients read as a malformed answer instead of the SQL error it is. An id is
   added.
4. BINARY values are sent as upper-case hex, as Snowflake sends them (its clients decode them
   with an upper-case-only base-16 decoder). Nothing else in the emulator's answers is changed.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json

import uuid

import pyarrow as pa
import uvicorn
from starlette.routing import request_response

import fakesnow.server as fs_server
from fakesnow.instance import FakeSnow


def _json_cell(value, logical: str) -> str | None:
    """One Arrow cell in Snowflake's JSON result encoding (every value is a string)."""
    if value is None:
        return None
    if logical == "BOOLEAN":
        return "1" if value else "0"
    if logical.startswith("TIMESTAMP"):
        if value.get("epoch") is None:
            return None
        text = f"{value['epoch']}.{value['fraction']:09d}"
        return f"{text} {value['timezone']}" if "timezone" in value else text
    if logical == "DATE":
        if isinstance(value, datetime.date):
            return str((value - datetime.date(1970, 1, 1)).days)
        return str(value)
    if logical == "TIME":
        return f"{value // 1_000_000_000}.{value % 1_000_000_000:09d}"
    if isinstance(value, (bytes, bytearray)):
        return value.hex().upper()  # Snowflake's JSON results carry BINARY as upper-case hex
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _arrow_to_json_rowset(b64: str) -> list[list[str | None]]:
    if not b64:
        return []
    table = pa.ipc.open_stream(base64.b64decode(b64)).read_all()
    logical = [(f.metadata or {}).get(b"logicalType", b"TEXT").decode() for f in table.schema]
    columns = [c.to_pylist() for c in table.columns]
    return [[_json_cell(v, logical[i]) for i, v in enumerate(row)] for row in zip(*columns)]


_original_query_request = fs_server.query_request


async def query_request_json(request):
    response = await _original_query_request(request)
    body = json.loads(response.body)
    data = body.get("data") or {}
    if body.get("success") is False and isinstance(data, dict) and "queryId" not in data:
        data["queryId"] = str(uuid.uuid4())
        body["data"] = data
        return fs_server.JSONResponse(body, status_code=response.status_code)
    if data.get("queryResultFormat") == "arrow":
        data["rowset"] = _arrow_to_json_rowset(data.pop("rowsetBase64", ""))
        data["queryResultFormat"] = "json"
        return fs_server.JSONResponse(body, status_code=response.status_code)
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8086)
    parser.add_argument("--db-path", required=True, help="folder for the warehouse's database files")
    args = parser.parse_args()

    fs_server.shared_fs = FakeSnow(db_path=args.db_path)
    for route in fs_server.app.routes:
        if getattr(route, "endpoint", None) is _original_query_request:
            route.endpoint = query_request_json
            route.app = request_response(query_request_json)
    uvicorn.run(fs_server.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
