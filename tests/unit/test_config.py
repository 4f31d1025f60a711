"""The agent config: defaults, validation that names the key, sizes, and docs that list it all."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from kernlet.config import AgentConfig, ConfigError, apply_cluster, load_config, parse_size

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_defaults_fit_the_halfstack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config()
    assert cfg.nats.url == "nats://127.0.0.1:4222"
    assert cfg.docker.url == "unix:///var/run/docker.sock"
    assert cfg.container.bind_host == "127.0.0.1"
    assert cfg.log_dir == cfg.agent.var_dir / "log"
    assert cfg.container.scratch_type == "hostdir" and cfg.container.scratch_size == 0
    assert cfg.container.shm_size == 64 * 1024**2 and cfg.container.keep_logs == 256 * 1024
    assert (cfg.container.ulimit_nofile, cfg.container.ulimit_nproc) == (512000, 65536)
    assert cfg.agent.min_log_free == 256 * 1024**2


def test_the_event_log_has_its_own_dir_and_an_old_one_stays_where_it_was(
        tmp_path: Path) -> None:
    cfg = load_config(overrides={"agent": {"var_dir": str(tmp_path)}})
    assert cfg.log_path == tmp_path / "log" / "events.sqlite"
    assert cfg.kept_logs_dir == tmp_path / "log" / "kernel-logs"
    (tmp_path / "events.sqlite").write_bytes(b"")  # an agent of before log-dir
    assert cfg.log_path == tmp_path / "events.sqlite"
    assert cfg.kept_logs_dir == tmp_path / "kernel-logs"
    moved = load_config(overrides={"agent": {"var_dir": str(tmp_path),
                                             "log_dir": str(tmp_path / "disk2")}})
    assert moved.log_path == tmp_path / "disk2" / "events.sqlite"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[container]\nscratch-type = 'nfs'\n", "container.scratch-type"),
        ("[container]\nscratch-type = 'tmpfs'\n", "scratch-type tmpfs needs scratch-size"),
        ("[container]\nshm-size = '1g'\n", "shm-size (1073741824) above default-mem"),
        ("[container]\nshm-size = '1k'\n", "container.shm-size"),
        ("[container]\nscratch-size = 'big'\n", "container.scratch-size"),
        ("[container]\nulimit-nofile = 3\n", "container.ulimit-nofile"),
        ("[agent]\nmin-log-free = '-1'\n", "agent.min-log-free"),
    ],
)
def test_bad_limits_are_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path)


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
        model = field.annotation
        assert model is not None
        if typing.get_origin(model) is dict:  # registries: one table per registry
            model = typing.get_args(model)[1]
        for key in model.model_fields:
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


def test_the_log_dir_is_local_only(tmp_path: Path) -> None:
    cfg = load_config(overrides={"agent": {"var_dir": str(tmp_path)}})
    merged, refused = apply_cluster(cfg, {"agent/log-dir": "/elsewhere",
                                          "agent/min-log-free": "1g",
                                          "container/scratch-type": "tmpfs"})
    assert merged.log_dir == tmp_path / "log" and merged.agent.min_log_free == 1024**3
    # tmpfs without a size is invalid, so it is refused and the config stays as it was
    assert sorted(refused) == ["agent/log-dir", "container/scratch-type"]


def test_advertised_host_defaults_to_the_bind_host() -> None:
    assert AgentConfig().advertised_host == "127.0.0.1"
    cfg = AgentConfig.model_validate({"container": {"bind-host": "0.0.0.0"}})
    assert cfg.advertised_host == "0.0.0.0"
    cfg = AgentConfig.model_validate({"agent": {"advertised-host": "node7.example"},
                                      "container": {"bind-host": "0.0.0.0"}})
    assert cfg.advertised_host == "node7.example"
