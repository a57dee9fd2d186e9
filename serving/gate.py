"""The ASGI gate in front of the scoring routes: API key, body-size limit, content types, clear 4xx bodies.

It runs inside BentoML's own middleware (metrics, tracing, access log, timeout), so every request still
counts in ``/metrics``. After its checks it hands the hot routes (``POST /score``) straight to the aeguard
Starlette app: BentoML's router would otherwise send them to the ``@bentoml.api`` method of the same route,
which exists for the published schema and parses bodies with pydantic models. Everything else goes on to
BentoML.

BentoML parses the bodies of the routes it keeps (``/score_csv``), and a few of its failure paths answer 500
for what is really a client error (a malformed multipart body, a non-file ``file`` field) or format 4xx
bodies in ways that do not name the problem. The gate checks everything it can before BentoML sees the
request and rewrites BentoML's pydantic 400 bodies into ``{"error": "<field>: <problem>", "detail": [...]}``.
It also adds what BentoML cannot generate to the OpenAPI schema at ``/docs.json``
(:func:`aeguard.serving.schemas.extend_openapi`).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aeguard.serving.inputs import ARROW_MEDIA, NPY_MEDIA

Scope = dict[str, Any]

JSON_TYPES = ("application/json", "")
SCORE_TYPES = (*JSON_TYPES, ARROW_MEDIA, NPY_MEDIA)
MULTIPART = "multipart/form-data"
OPENAPI_PATH = "/docs.json"
#: where refused API keys are logged (client address and route; never the presented key)
auth_log = logging.getLogger("aeguard.serving.auth")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def media_type(scope: Scope) -> str:
    return (header(scope, b"content-type") or "").split(";")[0].strip().lower()


def key_matches(presented: str, keys: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every configured key (all of them, whichever matches)."""
    given = presented.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def presented_key(scope: Scope) -> str | None:
    """The API key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = header(scope, b"authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


#: the discriminator tags of the request schema's unions, by the location part they follow
_UNION_TAGS = {"rows": ("record", "values"), "contamination": ("rate", "auto", "none")}


def _loc(loc: Any) -> str:
    """``('rows', 0, 'record', 'a')`` -> ``rows[0].a`` (drops the union tags pydantic puts in locations)."""
    parts = list(loc or ())
    out = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        owner = parts[i - 2] if i >= 2 and isinstance(parts[i - 1], int) else parts[i - 1] if i >= 1 else None
        if part in _UNION_TAGS.get(str(owner), ()):
            continue
        out += f".{part}" if out else str(part)
    return out or "body"


def validation_message(detail: list[dict[str, Any]]) -> str:
    """One sentence for BentoML's pydantic error list: the first problem, and how many there are."""
    first = detail[0]
    msg = str(first.get("msg", "invalid value"))
    where = _loc(first.get("loc"))
    if first.get("type") == "json_invalid":
        text = f"malformed JSON body: {msg.removeprefix('Invalid JSON: ')}"
    elif first.get("type") == "extra_forbidden":
        text = f"unknown field {where!r} in the request body"
    else:
        text = f"{where}: {msg}"
    more = len(detail) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")


async def send_json(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(Exception):
    pass


class Gate:
    """ASGI middleware; ``protected`` are the routes behind the API key, ``scoring`` the POST routes whose
    bodies are size-checked (with their accepted media types), ``hot_routes`` the scoring routes answered by
    ``await handler(scope, body, send)`` instead of BentoML's router; the 4xx bodies of the others are
    normalised. ``api_key`` and ``api_keys`` together are the accepted keys (several during a rotation); none
    means no check."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int, api_keys: tuple[str, ...] = (),
                 hot_routes: Mapping[str, Any] | None = None,
                 protected: tuple[str, ...] = ("/score", "/score_csv", "/score_images", "/models"),
                 scoring: dict[str, tuple[str, ...]] | None = None,
                 openapi: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.app = app
        self.api_key = api_key
        keys = ([api_key] if api_key else []) + [k for k in api_keys if k]
        self.keys = tuple(dict.fromkeys(k.encode("utf-8", "surrogateescape") for k in keys))
        self.max_body_bytes = max_body_bytes
        self.hot_routes = dict(hot_routes or {})
        self.protected = protected
        self.scoring = scoring if scoring is not None else {"/score": SCORE_TYPES, "/score_csv": (MULTIPART,),
                                                            "/score_images": (MULTIPART,)}
        self.openapi = openapi

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path not in self.protected:
            if path == OPENAPI_PATH and self.openapi is not None and scope.get("method") == "GET":
                send = _rewriting_send(send, self._extend_spec, lambda status: status == 200)
            await self.app(scope, receive, send)
            return
        if self.keys:
            key = presented_key(scope)
            if key is None or not key_matches(key, self.keys):
                problem = "missing API key" if key is None else "invalid API key"
                auth_log.warning("401 %s %s from %s: %s", scope.get("method"), path, client_address(scope),
                                 problem)
                await send_json(send, 401, {"error": f"{problem}: send 'Authorization: Bearer <key>' or "
                                                     "'X-API-Key: <key>'"},
                                headers=[(b"www-authenticate", b'Bearer realm="aeguard"')])
                return
        if path not in self.scoring or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        await self._scoring(scope, receive, send, self.scoring[path])

    async def _scoring(self, scope: Scope, receive: Any, send: Any, media_types: tuple[str, ...]) -> None:
        media = media_type(scope)
        if media not in media_types:
            wanted = " or ".join(m for m in media_types if m)
            await send_json(send, 415, {"error": f"unsupported content type {media or 'none'!r} for "
                                                 f"{scope['path']}: send Content-Type: {wanted}"})
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_json(send, 413, self._too_large(int(declared)))
            return
        try:
            body = await self._read_body(receive)
        except BodyTooLarge:
            await send_json(send, 413, self._too_large(None))
            return
        hot = self.hot_routes.get(scope["path"])
        if hot is not None:  # parses its own body (/score_images reads its multipart form itself)
            await hot(scope, body, send)
            return
        if media == MULTIPART:
            problem = await _multipart_problem(scope, body)
            if problem:
                await send_json(send, 400, {"error": problem})
                return
        await self.app(scope, _replay(body, receive), _rewriting_send(send, _normalise, lambda s: 400 <= s < 500))

    def _extend_spec(self, body: bytes) -> bytes:
        try:
            spec = json.loads(body)
        except ValueError:
            return body
        return json.dumps(self.openapi(spec)).encode()

    def _too_large(self, n_bytes: int | None) -> dict[str, str]:
        size = f"of {n_bytes} bytes " if n_bytes is not None else ""
        return {"error": f"request body {size}exceeds the limit of {self.max_body_bytes} bytes "
                         "(AEGUARD_MAX_BODY_BYTES); send fewer rows per request"}

    async def _read_body(self, receive: Any) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _multipart_problem(scope: Scope, body: bytes) -> str | None:
    """BentoML answers 500 for unparsable multipart bodies and downloads ``file`` fields given as URLs;
    accept only a well-formed form whose ``file`` is one uploaded file."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({**scope, "app": None}, receive)
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed body
        return f"malformed multipart/form-data body: {exc}"
    try:
        files = form.getlist("file")
        if len(files) != 1 or not isinstance(files[0], UploadFile):
            return "send the CSV as exactly one uploaded file in the form field 'file'"
    finally:
        await form.close()
    return None


def _rewriting_send(send: Any, rewrite: Callable[[bytes], bytes], when: Callable[[int], bool]) -> Any:
    """Collect the body of a response whose status passes ``when`` and send ``rewrite(body)`` instead
    (with the content length fixed); other responses pass through."""
    state: dict[str, Any] = {}

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if when(message["status"]):
                state["start"] = message
                state["chunks"] = []
                return
            await send(message)
            return
        if "start" not in state or message["type"] != "http.response.body":
            await send(message)
            return
        state["chunks"].append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start, body = state.pop("start"), b"".join(state.pop("chunks"))
        body = rewrite(body)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _normalise(body: bytes) -> bytes:
    """BentoML's 4xx JSON bodies with ``error`` naming the problem (pydantic errors, and the one-element
    list BentoML answers for its own 4xx exceptions)."""
    try:
        data = json.loads(body)
    except ValueError:
        return json.dumps({"error": body.decode("utf-8", "replace").strip() or "bad request"}).encode()
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("detail"), list) and data["detail"]:
        data = {"error": validation_message(data["detail"]), "detail": data["detail"]}
    if not isinstance(data, dict) or "error" not in data:
        data = {"error": str(data)}
    return json.dumps(data).encode()
