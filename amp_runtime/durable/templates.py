"""The `@amp_runtime.template(name)` class decorator and the table of templates it fills.

A template is a class constructed with no arguments. Its public `async def` methods are the
exported functions; their signatures (parameter names and annotations, return annotation) are
the interface, and parameters are validated against them. Its public fields (annotated class
fields and public instance attributes) are the instance's durable state.

Inside a function, `self.ctx` is the instance's `WorkerContext`:

    @amp_runtime.template("approval")
    class Approval:
        async def request(self, msg: str) -> list[int]:
            promise_id = await self.ctx.create_promise()     # an oplog index
            return list(await self.ctx.await_promise(promise_id))

`ctx.args` / `ctx.env` hold the worker's creation arguments and environment.
"""

from __future__ import annotations

import hashlib
import inspect
import typing
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

# templateId = uuid5(TEMPLATE_NAMESPACE, name): stable across restarts and processes.
TEMPLATE_NAMESPACE = uuid.UUID("6f1a3c52-2d7e-4d2b-9a64-5b1f0c9e7a10")

_NO_ANNOTATION = inspect.Parameter.empty


class WorkerContext(Protocol):
    """What a template's functions reach through `self.ctx` (implemented by the instance)."""

    worker_name: str
    args: list[str]
    env: dict[str, str]

    async def create_promise(self) -> int: ...

    async def await_promise(self, promise_id: int) -> bytes: ...


class InvalidParams(Exception):
    """Parameters that do not fit a function's signature; `problems` lists each one."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def type_name(annotation: Any) -> str:
    """How a type is shown in `GET /v1/templates`: `int`, `list[int]`, `any`, `none`."""
    if annotation is _NO_ANNOTATION or annotation is Any:
        return "any"
    if annotation is None or annotation is type(None):
        return "none"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    annotation: Any
    required: bool

    @property
    def type_name(self) -> str:
        return type_name(self.annotation)


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    params: tuple[ParamSpec, ...]
    result: Any  # the return annotation

    @property
    def returns_nothing(self) -> bool:
        return self.result is None or self.result is type(None)

    def signature_text(self) -> str:
        params = ", ".join(f"{p.name}: {p.type_name}" for p in self.params)
        return f"{self.name}({params}) -> {type_name(self.result)}"

    def convert_params(self, raw: list[Any]) -> list[Any]:
        """Each value converted to its parameter's type; raises `InvalidParams` listing every
        problem (count and each mismatching value)."""
        problems = []
        required = sum(1 for p in self.params if p.required)
        if not required <= len(raw) <= len(self.params):
            expected = str(len(self.params)) if required == len(self.params) else f"{required} to {len(self.params)}"
            problems.append(
                f"function {self.signature_text()} takes {expected} parameter(s), got {len(raw)}"
            )
        converted = []
        for position, (param, value) in enumerate(zip(self.params, raw), start=1):
            if param.annotation is _NO_ANNOTATION or param.annotation is Any:
                converted.append(value)
                continue
            try:
                converted.append(msgspec.convert(value, param.annotation))
            except msgspec.ValidationError as exc:
                from ..core.http import every_problem  # only for a bad value: the module stays light

                # msgspec stops at the first problem inside a value; the client is owed all of them.
                found = every_problem(value, param.annotation, f"$.params[{position - 1}]") or [str(exc)]
                problems.extend(f"parameter #{position} {param.name!r}: {problem}" for problem in found)
        if problems:
            raise InvalidParams(problems)
        return converted


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    name: str
    cls: type
    template_id: str
    functions: dict[str, FunctionSpec]
    state_fields: dict[str, Any]  # annotated public fields -> their type (for decoding state)
    interface_hash: str

    # -- state -----------------------------------------------------------------------
    def new_object(self, ctx: WorkerContext, state: bytes | None = None) -> Any:
        """A fresh object with `ctx` attached and, when given, the persisted state restored."""
        obj = self.cls()
        obj._amp_ctx = ctx
        if state:
            for name, value in msgspec.json.decode(state).items():
                hint = self.state_fields.get(name)
                if hint is not None:
                    value = msgspec.convert(value, hint)
                setattr(obj, name, value)
        return obj

    def encode_state(self, obj: Any) -> bytes:
        """The object's public fields as msgspec JSON; raises if a field cannot be encoded."""
        fields = {name: getattr(obj, name) for name in self.state_fields if hasattr(obj, name)}
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                fields[name] = value
        return msgspec.json.encode(fields)


TEMPLATES: dict[str, TemplateSpec] = {}  # by templateId


def template_id_for(name: str) -> str:
    return str(uuid.uuid5(TEMPLATE_NAMESPACE, name))


def by_id(template_id: str) -> TemplateSpec | None:
    return TEMPLATES.get(template_id.lower())


def _function_spec(name: str, method: Any, hints: dict[str, Any]) -> FunctionSpec:
    signature = inspect.signature(method)
    params = []
    for param in list(signature.parameters.values())[1:]:  # skip self
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise TypeError(f"template function {name}: only positional parameters are supported ({param})")
        params.append(ParamSpec(param.name, hints.get(param.name, _NO_ANNOTATION), param.default is param.empty))
    result = hints.get("return", signature.return_annotation)
    return FunctionSpec(name, tuple(params), result)


def _interface_hash(functions: dict[str, FunctionSpec]) -> str:
    text = "\n".join(functions[name].signature_text() for name in sorted(functions))
    return hashlib.sha256(text.encode()).hexdigest()


def template(name: str):
    """Register a class as the durable-worker template `name` (see the module docstring)."""

    def register(cls: type) -> type:
        if not isinstance(cls, type):
            raise TypeError("@template decorates a class")
        if "ctx" in vars(cls):
            raise TypeError(f"template {name}: `ctx` is reserved for the worker context")
        functions = {}
        for attr, method in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if not attr.startswith("_"):
                functions[attr] = _function_spec(attr, method, typing.get_type_hints(method))
        class_hints = typing.get_type_hints(cls)
        state_fields = {
            field: hint for field, hint in class_hints.items()
            if not field.startswith("_") and typing.get_origin(hint) is not typing.ClassVar
        }
        cls.ctx = property(lambda self: self._amp_ctx, doc="The worker context (promises, args, env).")
        spec = TemplateSpec(
            name=name,
            cls=cls,
            template_id=template_id_for(name),
            functions=functions,
            state_fields=state_fields,
            interface_hash=_interface_hash(functions),
        )
        TEMPLATES[spec.template_id] = spec
        return cls

    return register
