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

For tests, two things the real service does that the emulator does not:

- a round trip: `--latency-ms N` awaits N ms before answering each statement (concurrent
  statements still overlap), as a real warehouse takes hundreds of milliseconds;
- failures on demand: `POST /floe-test/faults` with `{"code": "000603", "count": 5}` answers the
  next 5 statements with that Snowflake error code (and `"message"`, default a generic one), as
  Snowflake answers them (HTTP 200, `success: false`); `"http_status": 503` answers with that
  HTTP status instead; `"login": true` applies the fault to logins rather than statements.
  `GET /floe-test/faults` shows what is left; `DELETE` clears it.
"""

from __future__ import annotations

import argparse
import asyncio
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
_original_login_request = fs_server.login_request

# Faults armed through /floe-test/faults: {"query": [...], "login": [...]}, each entry one
# answer to give instead of the real one.
_faults: dict[str, list[dict]] = {"query": [], "login": []}
_latency_s = 0.0


def _take_fault(kind: str):
    queue = _faults[kind]
    if not queue:
        return None
    fault = queue.pop(0)
    status = int(fault.get("http_status") or 200)
    if status != 200:
        return fs_server.JSONResponse({"message": "injected failure"}, status_code=status)
    code = str(fault.get("code", "000603"))
    message = fault.get("message") or f"injected Snowflake error {code}"
    data = {"errorCode": code, "sqlState": "XX000", "queryId": str(uuid.uuid4())}
    return fs_server.JSONResponse({"data": data, "code": code, "message": message, "success": False})


async def faults(request):
    if request.method == "POST":
        spec = await request.json()
        kind = "login" if spec.get("login") else "query"
        _faults[kind].extend([spec] * int(spec.get("count", 1)))
    elif request.method == "DELETE":
        for queue in _faults.values():
            queue.clear()
    return fs_server.JSONResponse({k: len(v) for k, v in _faults.items()})


async def login_request_faulty(request):
    injected = _take_fault("login")
    if injected is not None:
        return injected
    return await _original_login_request(request)


async def query_request_json(request):
    if _latency_s:
        await asyncio.sleep(_latency_s)
    injected = _take_fault("query")
    if injected is not None:
        return injected
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
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="wait this long before answering each statement (a real warehouse's round trip)")
    args = parser.parse_args()
    global _latency_s
    _latency_s = args.latency_ms / 1000.0

    fs_server.shared_fs = FakeSnow(db_path=args.db_path)
    replaced = {_original_query_request: query_request_json, _original_login_request: login_request_faulty}
    for route in fs_server.app.routes:
        handler = replaced.get(getattr(route, "endpoint", None))
        if handler is not None:
            route.endpoint = handler
            route.app = request_response(handler)
    fs_server.app.add_route("/floe-test/faults", faults, methods=["GET", "POST", "DELETE"])
    uvicorn.run(fs_server.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
