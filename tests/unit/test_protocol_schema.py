"""``kernlet protocol schema``: JSON Schema generated from the request models agrees with
the validation the agent does (kernlet.protocol.parse_request)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from kernlet.cli import main
from kernlet.errors import InvalidRequest
from kernlet.protocol import COMMANDS, json_schema, parse_request

SAMPLES: dict[str, dict[str, Any]] = {
    "ping": {"msg": "hi"},
    "execute": {"kernel_id": "k1", "run_id": "r1", "code": "print(1)", "mode": "query"},
    "destroy_kernel": {"kernel_id": "k1", "reason": "user-requested"},
    "create_kernels": {"session_id": "s1", "kernel_ids": ["k1"],
                       "configs": [{"image": "kernlet/python:3.11"}]},
}
BAD: dict[str, dict[str, Any]] = {
    "ping": {"msg": "hi", "surprise": 1},
    "execute": {"kernel_id": "-bad id", "run_id": "r1"},
    "destroy_kernel": {},
    "create_kernels": {"session_id": "s1", "kernel_ids": ["k1"], "configs": [{"image": 5}]},
}


def _validator() -> Draft202012Validator:
    doc = json_schema()
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc)


@pytest.mark.parametrize("command", sorted(SAMPLES))
def test_the_schema_accepts_what_the_agent_accepts_and_refuses_what_it_refuses(
    command: str,
) -> None:
    whole = _validator()
    good, bad = SAMPLES[command], BAD[command]
    parse_request(command, good)
    assert not list(whole.evolve(schema={**whole.schema, **whole.schema["properties"][command]})
                    .iter_errors(good))
    with pytest.raises(InvalidRequest):
        parse_request(command, bad)
    one = json_schema(command)
    Draft202012Validator.check_schema(one)
    assert list(Draft202012Validator(one).iter_errors(bad))
    assert not list(Draft202012Validator(one).iter_errors(good))


def test_every_command_is_in_the_document_and_the_cli_prints_it() -> None:
    doc = json_schema()
    assert set(doc["properties"]) == set(COMMANDS)
    assert "KernelConfig" in doc["$defs"] and "Reply" in doc["$defs"]
    out = CliRunner().invoke(main, ["protocol", "schema"])
    assert out.exit_code == 0 and json.loads(out.output) == doc
    one = CliRunner().invoke(main, ["protocol", "schema", "execute"])
    assert json.loads(one.output)["title"] == "execute"
    wrong = CliRunner().invoke(main, ["protocol", "schema", "no_such"])
    assert wrong.exit_code == 2 and "no_such" in wrong.output
