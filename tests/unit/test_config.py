"""The agent config: defaults, validation that names the key, sizes, and docs that list it all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernlet.config import AgentConfig, ConfigError, load_config, parse_size

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_defaults_fit_the_halfstack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config()
    assert cfg.nats.url == "nats://127.0.0.1:4222"
    assert cfg.docker.url == "unix:///var/run/docker.sock"
    assert cfg.container.bind_host == "127.0.0.1"
    assert cfg.log_path == cfg.agent.var_dir / "events.sqlite"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[container]\nkernel-uid = 'x'\n", "container.kernel-uid"),
        ("[agent]\nbogus = 1\n", "agent.bogus"),
        ("[container]\ndefault-mem = 'lots'\n", "container.default-mem"),
        ("[nats]\nurl = 5\n", "nats.url"),
        ("[watcher]\nport = 70000\n", "watcher.port"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[agent\n")
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        load_config(path)


def test_first_found_in_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent.toml").write_text("[agent]\nid = 'from-cwd'\n")
    assert load_config().agent.id == "from-cwd"


@pytest.mark.parametrize(("text", "size"), [("512m", 512 * 1024**2), ("1g", 1024**3),
                                            ("1.5GiB", int(1.5 * 1024**3)), ("4096", 4096)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_docs_list_every_key() -> None:
    doc = DOCS.read_text()
    for section, field in AgentConfig.model_fields.items():
        assert f"## [{section}]" in doc, section
        assert field.annotation is not None
        for key in field.annotation.model_fields:
            assert f"`{key.replace('_', '-')}`" in doc, f"{section}.{key} is not documented"


def test_cluster_settings_fill_what_the_local_file_leaves(tmp_path: Path) -> None:
    from kernlet.config import apply_cluster

    path = tmp_path / "agent.toml"
    path.write_text("[container]\ndefault-cpu = 0.5\n")
    local = load_config(path)
    merged, refused = apply_cluster(local, {
        "container/default-mem": "300m",   # applied
        "container/default-cpu": "2",      # the local file wins
        "agent/id": "stolen",              # local only
        "nats/url": "nats://elsewhere:1",  # local only
        "bogus/key": "1",                  # unknown
        "container/pids-limit": "many",    # invalid: refused, the rest still applies
    })
    assert merged.container.default_mem == 300 * 1024**2
    assert merged.container.default_cpu == 0.5
    assert merged.agent.id == local.agent.id and merged.nats.url == local.nats.url
    assert sorted(refused) == ["agent/id", "bogus/key", "container/pids-limit", "nats/url"]
    # a setting removed from etcd goes back to the default when applied on the local file
    again, _ = apply_cluster(local, {})
    assert again.container.default_mem == local.container.default_mem


def test_advertised_host_defaults_to_the_bind_host() -> None:
    assert AgentConfig().advertised_host == "127.0.0.1"
    cfg = AgentConfig.model_validate({"container": {"bind-host": "0.0.0.0"}})
    assert cfg.advertised_host == "0.0.0.0"
    cfg = AgentConfig.model_validate({"agent": {"advertised-host": "node7.example"},
                                      "container": {"bind-host": "0.0.0.0"}})
    assert cfg.advertised_host == "node7.example"
