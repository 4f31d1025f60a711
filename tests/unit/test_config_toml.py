"""The config written back as TOML: the sample is made from the model (every key, with its
comment), loads back to the defaults; ``show`` hides secrets; ConfigError names each key."""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path

import pytest

from kernlet.config import AgentConfig, ConfigError, load_config
from kernlet.config_toml import masked, render, sample


def test_the_sample_loads_back_to_the_defaults_and_names_every_key() -> None:
    text = sample()
    assert AgentConfig.model_validate(tomllib.loads(text)) == AgentConfig()
    for name, info in AgentConfig.model_fields.items():
        section = info.annotation
        assert section is not None
        if typing.get_origin(section) is dict:  # a table of tables: an example, commented
            section = typing.get_args(section)[1]
            assert f'# [{name}."NAME"]' in text
        else:
            assert f"[{name.replace('_', '-')}]" in text
        for field in section.model_fields:  # type: ignore[union-attr]
            assert f"{field.replace('_', '-')} = " in text, field


def test_a_table_of_tables_is_rendered_per_entry() -> None:
    text = render({"registries": {"localhost:5000": {"username": "u", "token-file": None}}},
                  commented=False)
    assert '[registries."localhost:5000"]\nusername = "u"\n' in text


def test_the_sample_carries_the_models_own_comments() -> None:
    text = sample()
    # the #: comment above LimitsSection.run_output_buffer and a section docstring
    assert "# output of one run the agent holds for its caller (bytes)" in text
    assert "# What the node offers kernels" in text
    assert '# id = "agent-' in text  # computed from the host name: left to the agent


def test_show_masks_secrets_and_round_trips(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[nats]\nuser = "u"\npassword = "hunter2"\n'
                 '[redis]\nurl = "redis://me:s3cret@127.0.0.1:6379/0"\n'
                 '[container]\nport-range = [33400, 33499]\n')
    data = masked(load_config(f))
    assert data["nats"]["password"] == "***" and data["nats"]["user"] == "u"
    assert data["redis"]["url"] == "redis://me:***@127.0.0.1:6379/0"
    text = render(data, commented=False)
    assert "hunter2" not in text and "s3cret" not in text
    again = tomllib.loads(text)
    assert again["container"]["port-range"] == [33400, 33499]


def test_config_error_names_each_bad_key(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[agent]\nid = 5\n[container]\nbogus = 1\n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert [k for k, _ in err.value.issues] == ["agent.id", "container.bogus"]
    f.write_text("[agent\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert err.value.issues[0][0] == "(file)"
