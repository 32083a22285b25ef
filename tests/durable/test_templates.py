"""The template decorator: interface, validation, state, stable ids."""

from typing import Any

import pytest

from amp_runtime.durable.templates import TEMPLATES, InvalidParams, template, template_id_for


@pytest.fixture
def scratch():
    names = []

    def make(name, cls):
        names.append(name)
        template(name)(cls)
        return TEMPLATES[template_id_for(name)]

    yield make
    for name in names:
        TEMPLATES.pop(template_id_for(name), None)


def test_public_async_methods_are_the_interface(scratch):
    class T:
        count: int = 0

        async def run(self, a: int, b: str = "x") -> str: ...
        async def _hidden(self) -> None: ...
        def sync_helper(self) -> None: ...

    spec = scratch("scratch-a", T)
    assert list(spec.functions) == ["run"]
    assert spec.functions["run"].signature_text() == "run(a: int, b: str) -> str"
    assert spec.template_id == template_id_for("scratch-a")  # uuid5 of the name: stable


def test_interface_hash_changes_with_the_signature_only(scratch):
    class V1:
        async def f(self, a: int) -> int: ...

    class V1Again:
        state: int = 0

        async def f(self, a: int) -> int: return a

    class V2:
        async def f(self, a: str) -> int: ...

    first = scratch("scratch-v", V1).interface_hash
    assert scratch("scratch-v", V1Again).interface_hash == first
    assert scratch("scratch-v", V2).interface_hash != first


def test_convert_params_lists_every_problem(scratch):
    class T:
        async def f(self, a: int, b: list[str], c: Any) -> None: ...

    fn = scratch("scratch-p", T).functions["f"]
    assert fn.convert_params([1, ["x"], {"any": 1}]) == [1, ["x"], {"any": 1}]
    with pytest.raises(InvalidParams) as err:
        fn.convert_params(["1", [2], None, "extra"])
    problems = err.value.problems
    assert len(problems) == 3 and "got 4" in problems[0] and "'a'" in problems[1] and "'b'" in problems[2]


def test_state_is_public_fields_and_survives_encoding(scratch):
    class T:
        total: int = 0

        def __init__(self):
            self.items = []
            self._cache = object()

        async def f(self) -> None: ...

    spec = scratch("scratch-s", T)
    obj = spec.new_object(None)
    obj.total, obj.items = 5, [1, 2]
    state = spec.encode_state(obj)
    again = spec.new_object(None, state)
    assert (again.total, again.items) == (5, [1, 2])
    assert b"_cache" not in state


def test_ctx_is_reserved():
    class T:
        ctx = None

    with pytest.raises(TypeError):
        template("scratch-ctx")(T)
