"""HTTP plumbing shared by every API family: route registration, auth, decode/encode, errors.

A family declares its routes through an `Api`: each route names its body, query and response
structs, so the same types validate input, encode output and feed `/openapi`. A route handler
receives decoded structs and returns a Struct (200), a `Reply` (any status) or a Quart
`Response` (streams). Raising `ApiError` renders the family's own error body.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Awaitable, Callable

import msgspec
from quart import Blueprint, Response, current_app, request, websocket

log = logging.getLogger("amp_runtime.http")

JSON = "application/json"
_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answer; the family decides the body shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or [message]
        self.headers = headers or {}


@dataclass(slots=True)
class Reply:
    """A response with an explicit status; `body=None` means no body."""

    status: int
    body: Any = None
    headers: dict[str, str] | None = None


# -- error bodies, one per family -------------------------------------------------------
class CodedError(msgspec.Struct):
    """Tasks, jobs and registry-read errors: a stable code and a human message."""

    error_code: str
    error_message: str


class DurableErrors(msgspec.Struct):
    """Durable workers, 400: every problem found in the request."""

    errors: list[str]


class DurableError(msgspec.Struct):
    """Durable workers, other statuses."""

    error: str


def render_coded(err: ApiError) -> bytes:
    return _encoder.encode(CodedError(err.code, err.message))


def render_durable(err: ApiError) -> bytes:
    if err.status == 400:
        return _encoder.encode(DurableErrors(err.problems))
    return _encoder.encode(DurableError(err.message))


ErrorRenderer = Callable[[ApiError], bytes]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = b"" if body is None else _encoder.encode(body)
    response = Response(data, status=status, content_type=JSON if body is not None else None)
    if headers:
        response.headers.update(headers)
    return response


def error_response(err: ApiError, render: ErrorRenderer) -> Response:
    response = Response(render(err), status=err.status, content_type=JSON)
    if err.headers:
        response.headers.update(err.headers)
    return response


# -- auth ------------------------------------------------------------------------------
def presented_credential(header: str | None) -> str | None:
    """`Authorization: <key>` or `Authorization: Bearer <key>`."""
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return header.strip()


def key_matches(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


# -- what the wiring hands the app ----------------------------------------------------
@dataclass(frozen=True)
class HttpSettings:
    """The config the HTTP plumbing reads, handed over when the app is built."""

    api_key: str
    max_json_depth: int


@dataclass(frozen=True)
class BoundServices:
    """Stored on the app by `create_app`: the settings and each family's service by family name."""

    settings: HttpSettings
    services: dict[str, Any]

    EXTENSION = "amp_runtime"

    def attach(self, app: Any) -> None:
        app.extensions[self.EXTENSION] = self

    @classmethod
    def current(cls) -> "BoundServices":
        return current_app.extensions[cls.EXTENSION]


def bound_service(family: str) -> Any:
    """The service wired for `family` in the app answering this request (for handlers that
    are not `Api` routes, like a WebSocket)."""
    return BoundServices.current().services[family]


def _takes_service(handler: Callable[..., Any]) -> bool:
    return "service" in inspect.signature(handler).parameters


# -- routes ----------------------------------------------------------------------------
@dataclass
class RouteInfo:
    """What `/openapi` needs to know about one route."""

    path: str  # OpenAPI style: /jobs/{job_id}
    method: str
    summary: str
    family: str
    body: type | None = None
    query: type | None = None
    responses: dict[int, Any] = field(default_factory=dict)
    public: bool = False
    headers: type | None = None  # a Struct documenting request headers (the handler reads them)
    content_type: str = JSON  # of the 2xx response
    describe: Callable[[dict, dict], None] | None = None  # amends (operation, component schemas)


_FROM_REQUEST = object()
_PATH_PARAM = re.compile(r"<(?:[a-z]+:)?([a-zA-Z_]+)>")


class Api:
    """One API family: a blueprint plus the metadata `/openapi` is generated from.

    `authorize(credential) -> bool` lets a family accept more than the API key (the reporting
    API's JWT bearer tokens).
    """

    def __init__(
        self,
        family: str,
        *,
        render_error: ErrorRenderer = render_coded,
        error_schema: Callable[[int], type] = lambda status: CodedError,
        prefixes: tuple[str, ...] = (),
        authorize: Callable[[str], bool] | None = None,
    ):
        self.family = family
        self.render_error = render_error
        self.error_schema = error_schema  # the struct `render_error` produces for a status
        self.prefixes = prefixes
        self.authorize = authorize
        self.blueprint = Blueprint(family, __name__)
        self.routes: list[RouteInfo] = []

    def _documented(self, responses: dict[int, Any], *, public: bool, body: bool, query: bool) -> dict[int, Any]:
        """The route's responses plus the errors the wrapper itself can answer."""
        implied = ([] if public else [401]) + ([400, 413] if body else []) + ([400] if query else [])
        return {**{status: self.error_schema(status) for status in implied}, **responses}

    def is_authorized(self, header: str | None | object = _FROM_REQUEST) -> bool:
        """True when no key is configured or the credential (by default the request's
        Authorization header; `None` = none presented) is valid."""
        key = BoundServices.current().settings.api_key
        if not key:
            return True
        if header is _FROM_REQUEST:
            header = request.headers.get("Authorization")
        credential = presented_credential(header)
        if key_matches(credential, key):
            return True
        return credential is not None and self.authorize is not None and self.authorize(credential)

    def check_auth(self) -> None:
        if not self.is_authorized():
            raise ApiError(401, "UNAUTHORIZED", "missing or wrong Authorization header")

    def websocket_authorized(self) -> bool:
        """For an upgrade on one of this family's WebSocket routes: the key comes as the
        Authorization header or, from browsers (which cannot set headers), as the subprotocol."""
        protocols = websocket.requested_subprotocols
        return self.is_authorized(websocket.headers.get("Authorization") or (protocols[0] if protocols else None))

    def route(
        self,
        path: str,
        method: str,
        *,
        summary: str,
        body: type | None = None,
        query: type | None = None,
        responses: dict[int, Any] | None = None,
        public: bool = False,
        aliases: tuple[str, ...] = (),
        extra_methods: tuple[str, ...] = (),
        content_type: str = JSON,
        describe: Callable[[dict, dict], None] | None = None,
        headers: type | None = None,
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Register `handler(**path_params, body=?, query=?, service=?)` for `method path`;
        a handler with a `service` parameter gets the service wired for this family.

        `aliases` are extra URL rules for the same handler that `/openapi` does not list (e.g.
        version-prefixed paths); `extra_methods` likewise (GET-with-body for POST routes).
        `describe(operation, schemas)` adds to the route's generated OpenAPI what only the family
        knows (the tasks API: each function's input schema).
        """
        body_decoder = msgspec.json.Decoder(body) if body is not None else None

        def decorate(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            render = self.render_error
            inject_service = _takes_service(handler)

            async def view(**params: Any) -> Response:
                try:
                    # Read the body even when unused or unauthorized: answering before it is
                    # read can stall the next request on a keep-alive connection (hypercorn).
                    data = await request.get_data()
                    if not public:
                        self.check_auth()
                    if body_decoder is not None:
                        params["body"] = decode_body(body_decoder, data)
                    if query is not None:
                        params["query"] = decode_query(query, request.args)
                    if inject_service:
                        params["service"] = bound_service(self.family)
                    result = await handler(**params)
                except ApiError as err:
                    return error_response(err, render)
                if isinstance(result, Response):
                    return result
                if isinstance(result, Reply):
                    return json_response(result.body, result.status, result.headers)
                return json_response(result)

            endpoint = f"{handler.__name__}_{method.lower()}".replace(".", "_")
            methods = [method, *extra_methods]
            for rule in (path, *aliases):
                self.blueprint.add_url_rule(  # Flask refuses dots in endpoint names
                    rule, endpoint=f"{endpoint}_{rule}".replace(".", "_"), view_func=view, methods=methods
                )
            self.routes.append(
                RouteInfo(
                    path=_PATH_PARAM.sub(r"{\1}", path),
                    method=method.lower(),
                    summary=summary,
                    family=self.family,
                    body=body,
                    query=query,
                    responses=self._documented(responses or {}, public=public, body=body is not None,
                                               query=query is not None),
                    public=public,
                    content_type=content_type,
                    describe=describe,
                    headers=headers,
                )
            )
            return handler

        return decorate


def json_depth_exceeds(data: bytes, limit: int) -> bool:
    """True when JSON nesting goes deeper than `limit` (brackets inside strings don't count)."""
    if data.count(b"[") + data.count(b"{") <= limit:  # C-speed: most bodies stop here
        return False
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def require_utf8(data: bytes) -> None:
    """Raises `ApiError` 400 `MALFORMED_JSON` for a body that is not UTF-8. msgspec skips unknown
    fields without reading their strings, so the body is checked whole; an ASCII one (the common
    case) costs only the C-speed `isascii`."""
    try:
        if not data.isascii():
            data.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(400, "MALFORMED_JSON", f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from None


def is_utf8(data: bytes) -> bool:
    try:
        require_utf8(data)
    except ApiError:
        return False
    return True


# A family's checks beyond the types, by body type (the tasks API registers `TaskRequest`'s):
# called with the plain body when it failed to decode, so the 400 lists both kinds of problem.
SEMANTIC_CHECKS: dict[type, Callable[[Any], list[str]]] = {}


def decode_body(decoder: msgspec.json.Decoder, data: bytes) -> Any:
    require_utf8(data)
    if not data.strip():
        data = b"{}"
    limit = BoundServices.current().settings.max_json_depth
    if json_depth_exceeds(data, limit):
        raise ApiError(400, "JSON_TOO_DEEP", f"JSON nested deeper than {limit} levels")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        # msgspec stops at the first problem; the client is owed all of them. The body is
        # well-formed JSON here (else DecodeError): decoded as plain values it is checked again
        # field by field, unless even that fails (a number out of any range, like 1e400).
        try:
            plain = msgspec.json.decode(data)
        except msgspec.MsgspecError:
            problems = [str(exc)]
        else:
            problems = every_problem(plain, decoder.type) or [str(exc)]
            semantic = SEMANTIC_CHECKS.get(decoder.type)
            if semantic is not None:  # what the fields that do decode would be refused for, too
                problems += [p for p in semantic(plain) if p not in problems]
        raise ApiError(400, "INVALID_REQUEST", "invalid request body: " + "; ".join(problems),
                       problems=problems) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "MALFORMED_JSON", f"malformed JSON: {exc}") from None


def decode_query(query_type: type, args: Any) -> Any:
    values: dict[str, Any] = {}
    for key in args:
        items = args.getlist(key)
        values[key] = items[0] if len(items) == 1 else items
    try:
        return msgspec.convert(values, query_type, strict=False)
    except msgspec.ValidationError as exc:
        problems = every_problem(values, query_type, strict=False) or [str(exc)]
        raise ApiError(400, "INVALID_QUERY", "invalid query parameter: " + "; ".join(problems),
                       problems=problems) from None


# -- every problem, not just the first ------------------------------------------------
_INT64_RANGE = range(-(2**63), 2**64)  # what msgspec's JSON decoder takes for an `int`


def every_problem(value: Any, target: Any, path: str = "$", *, strict: bool = True) -> list[str]:
    """Every validation problem of `value` (plain decoded JSON) against the type `target`,
    each naming its JSON path as msgspec does. Structs are checked field by field, arrays and
    objects item by item, so one bad field does not hide the next; a leaf gives msgspec's
    own message. Only called once decoding has failed: the happy path costs nothing."""
    try:
        msgspec.convert(value, target, strict=strict)
    except msgspec.ValidationError as exc:
        message, sep, where = str(exc).rpartition(" - at `$")
        first = f"{message} - at `{path}{where[:-1]}`" if sep else f"{str(exc)} - at `{path}`"
        return _dedupe(_explain(value, target, path, strict)) or [first]
    if type(value) is int and value not in _INT64_RANGE and _takes_int(target):
        return [f"Number out of range - at `{path}`"]  # convert takes big ints; JSON decoding does not
    return []


def _base(target: Any) -> Any:
    while typing.get_origin(target) is Annotated:
        target = typing.get_args(target)[0]
    return target


def _takes_int(target: Any) -> bool:
    target = _base(target)
    if typing.get_origin(target) in (typing.Union, types.UnionType):
        return any(_takes_int(t) for t in typing.get_args(target))
    return target is int


def _dedupe(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))


def key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{_encoder.encode(key).decode()}]"


def _explain(value: Any, target: Any, path: str, strict: bool) -> list[str]:
    """The problems inside a container value that failed as a whole; [] when the problem is
    the value itself (its type, a bound, a length)."""
    target = _base(target)
    origin, args = typing.get_origin(target), typing.get_args(target)
    if isinstance(target, type) and issubclass(target, msgspec.Struct) and isinstance(value, dict):
        problems: list[str] = []
        fields = msgspec.structs.fields(target)
        for info in fields:
            if info.encode_name in value:
                problems += every_problem(value[info.encode_name], info.type, key_path(path, info.encode_name),
                                          strict=strict)
            elif info.required:
                problems.append(f"Object missing required field `{info.encode_name}` - at `{path}`")
        if target.__struct_config__.forbid_unknown_fields:
            known = {info.encode_name for info in fields}
            problems += [f"Object contains unknown field `{key}` - at `{path}`" for key in value if key not in known]
        return problems
    if origin in (list, set, frozenset) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in every_problem(item, args[0], f"{path}[{i}]", strict=strict)]
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            return []
        return [p for i, (item, kind) in enumerate(zip(value, args))
                for p in every_problem(item, kind, f"{path}[{i}]", strict=strict)]
    if origin is dict and isinstance(value, dict):
        key_type, value_type = args or (Any, Any)
        return [p for key, item in value.items()
                for p in every_problem(key, key_type, path, strict=strict)
                + every_problem(item, value_type, key_path(path, str(key)), strict=strict)]
    if origin in (typing.Union, types.UnionType):
        branches = [t for t in args if _same_json_kind(value, _base(t))]
        return every_problem(value, branches[0], path, strict=strict) if len(branches) == 1 else []
    return []


def _same_json_kind(value: Any, target: Any) -> bool:
    """Could `value` be meant as a `target`? (Picks the branch of a union to explain.)"""
    origin = typing.get_origin(target) or target
    if isinstance(value, list):
        return origin in (list, tuple, set, frozenset)
    if isinstance(value, dict):
        return origin is dict or (isinstance(origin, type) and issubclass(origin, msgspec.Struct))
    return False
