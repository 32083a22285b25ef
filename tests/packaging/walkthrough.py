"""README's "Write and deploy your own function", read from README.md: the files it says to
save, and each curl call with the result it shows. Run as written by test_user_functions.py
(the installed command) and test_binary.py (the binary)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Write and deploy your own function"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
SAVE_AS = re.compile(r"save this as `([\w.]+)`")
CURL = re.compile(r"^curl -s localhost:1610(/\S+) -d '(.*)'$")
RESULT = re.compile(r'"result":(.*),"duration_ms"')


@dataclass
class Call:
    path: str
    body: dict
    result: object


def section() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n#", start + len(SECTION))
    return text[start:end]


def files() -> dict[str, str]:
    """{file name: content}: the python block under the name the text gives, the toml block as config.toml."""
    text = section()
    [module] = SAVE_AS.findall(text)
    blocks = {lang: body for lang, body in FENCE.findall(text)}
    return {module: blocks["python"], "config.toml": blocks["toml"]}


def calls() -> list[Call]:
    lines = dict(FENCE.findall(section()))["sh"].splitlines()
    found = []
    for line, answer in zip(lines, lines[1:]):
        match = CURL.match(line)
        if match:
            found.append(Call(match.group(1), json.loads(match.group(2)), json.loads(RESULT.search(answer).group(1))))
    assert len(found) == 3, "the walk-through calls its three functions"
    return found


def write_files(directory: Path) -> None:
    for name, content in files().items():
        (directory / name).write_text(content)


async def check_calls(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for call in calls():
            answer = await client.post(call.path, json=call.body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"] == call.result, (call, answer.text)
