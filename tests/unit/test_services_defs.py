"""The service-ports label parser, services.json, and the commands built from them."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernlet import images
from kernlet.runner.services import (
    ServicePort,
    launch_argv,
    load_service_defs,
    log_file,
    new_token,
    parse_service_ports,
    pid_file,
    stop_argv,
)


def test_parse_the_python_image_label() -> None:
    label = images.PYTHON_IMAGE_LABELS[images.SERVICE_PORTS_LABEL]
    assert label == "jupyter:http:8888,terminal:http:7681"
    assert parse_service_ports(label) == [
        ServicePort("jupyter", "http", 8888),
        ServicePort("terminal", "http", 7681),
    ]


@pytest.mark.parametrize("label", ["", "   ", "\n"])
def test_empty_label_declares_nothing(label: str) -> None:
    assert parse_service_ports(label) == []


def test_spaces_around_entries_are_ignored() -> None:
    assert parse_service_ports(" ssh:tcp:2222 , web-2:http:8080 ") == [
        ServicePort("ssh", "tcp", 2222),
        ServicePort("web-2", "http", 8080),
    ]
    assert str(ServicePort("ssh", "tcp", 2222)) == "ssh:tcp:2222"


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("jupyter:http:8888,jupyter:http:8889", "duplicate service name 'jupyter'"),
        ("jupyter:http:8888,terminal:http:8888", "duplicate port 8888"),
        ("a:http:1024,b:tcp:1024", "duplicate port 1024"),
        ("jupyter:http", "expected name:protocol:port"),
        ("jupyter:http:8888:1", "expected name:protocol:port"),
        ("jupyter", "expected name:protocol:port"),
        ("jupyter:http:8888,", "entry 2 is empty"),
        ("jupyter:http:8888,,terminal:http:7681", "entry 2 is empty"),
        ("Jupyter:http:8888", "bad name 'Jupyter'"),
        ("1up:http:8888", "bad name '1up'"),
        ("a_b:http:8888", "bad name 'a_b'"),
        ("-a:http:8888", "bad name '-a'"),
        ("a" * 33 + ":http:8888", "bad name"),
        (":http:8888", "bad name ''"),
        ("web:https:8443", "unknown protocol 'https'"),
        ("web:HTTP:8080", "unknown protocol 'HTTP'"),
        ("web:http:80", "port 80 is outside 1024-65535"),
        ("web:http:0", "port 0 is outside"),
        ("web:http:65536", "port 65536 is outside"),
        ("web:http:-1", "not a number"),
        ("web:http:8o80", "not a number"),
        ("web:http:", "not a number"),
        ("web:http:\uff18\uff10\uff18\uff10", "not a number"),  # full-width: isdigit() says yes
        ("web:http:8080-8081", "not a number"),
    ],
)
def test_bad_labels_fail_loudly(label: str, message: str) -> None:
    with pytest.raises(ValueError, match="service-ports entry") as info:
        parse_service_ports(label)
    assert message in str(info.value)


def test_the_error_names_both_entries_of_a_duplicate() -> None:
    with pytest.raises(ValueError) as info:
        parse_service_ports("jupyter:http:8888,lab:http:9000,other:http:8888")
    text = str(info.value)
    assert "entry 3 ('other:http:8888')" in text and "'jupyter:http:8888'" in text


entries = st.tuples(
    st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True),
    st.sampled_from(["http", "tcp"]),
    st.integers(1024, 65535),
)


@given(st.lists(entries, max_size=8))
def test_parser_accepts_exactly_the_labels_without_repeats(
    items: list[tuple[str, str, int]],
) -> None:
    label = ",".join(f"{n}:{p}:{port}" for n, p, port in items)
    names = [n for n, _, _ in items]
    ports = [port for _, _, port in items]
    if len(set(names)) == len(names) and len(set(ports)) == len(ports):
        assert parse_service_ports(label) == [ServicePort(*item) for item in items]
    else:
        with pytest.raises(ValueError, match="duplicate"):
            parse_service_ports(label)


@given(st.text(max_size=60))
def test_parser_never_fails_other_than_with_value_error(label: str) -> None:
    try:
        parsed = parse_service_ports(label)
    except ValueError:
        return
    assert len({p.name for p in parsed}) == len(parsed) == len({p.port for p in parsed})


def test_every_declared_service_has_a_definition() -> None:
    defs = load_service_defs()
    declared = parse_service_ports(images.PYTHON_IMAGE_LABELS[images.SERVICE_PORTS_LABEL])
    assert {p.name for p in declared} <= set(defs)
    assert all(p.protocol == "http" for p in declared)  # both are probed over HTTP


def test_jupyter_definition() -> None:
    jupyter = load_service_defs()["jupyter"]
    argv = jupyter.argv(port=8888, token="T0K", workdir="/home/work")
    assert argv[:3] == ["python3", "-m", "notebook"]
    assert "--port=8888" in argv and "--ip=0.0.0.0" in argv and "--no-browser" in argv
    assert "--NotebookApp.notebook_dir=/home/work" in argv
    assert not any("T0K" in arg for arg in argv)  # the token travels in the environment
    assert jupyter.environ(port=8888, token="T0K", workdir="/w") == {"JUPYTER_TOKEN": "T0K"}
    assert jupyter.ready_path == "/api"
    assert jupyter.ready_url(30001, "T0K") == "http://127.0.0.1:30001/api?token=T0K"
    assert jupyter.user_url(30001, "T0K") == "http://127.0.0.1:30001/tree?token=T0K"
    assert "notebook" in jupyter.needs


def test_terminal_definition_runs_the_mounted_module() -> None:
    terminal = load_service_defs()["terminal"]
    argv = terminal.argv(port=7681, token="T0K", workdir="/home/work")
    assert argv == [
        "python3", "/opt/kernlet/lib/kernlet/runner/terminal.py",
        "--port=7681", "--workdir=/home/work",
    ]  # fmt: skip
    # the module is where the definition says, relative to the mounted package directory
    assert (Path(__file__).parents[2] / "src/kernlet/runner/terminal.py").is_file()
    assert terminal.environ(port=1, token="T0K", workdir="/w") == {"KERNLET_SERVICE_TOKEN": "T0K"}
    assert terminal.ready_url(30002, "T0K") == "http://127.0.0.1:30002/?token=T0K"
    assert terminal.user_url(30002, "T0K", host="h") == "http://h:30002/?token=T0K"


def _write(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "services.json"
    path.write_text(json.dumps(body))
    return path


GOOD = {"command": ["x", "--port={port}"], "ready_path": "/", "url_path": "/", "needs": "x"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command": []}, "command: expected a non-empty list"),
        ({"command": "x --port"}, "command: expected a non-empty list"),
        ({"command": ["x", 1]}, "command: expected a non-empty list"),
        ({"command": ["x", "{host}"]}, "unknown placeholder {host}"),
        ({"env": {"A": "{tok}"}}, "unknown placeholder {tok}"),
        ({"env": {"A": 1}}, "env: expected an object of strings"),
        ({"ready_path": "api"}, "must start with /"),
        ({"ready_path": "/?t={token}"}, "no placeholders"),
        ({"url_path": ""}, "url_path: expected a non-empty string"),
        ({"needs": None}, "needs: expected a non-empty string"),
        ({"port": 1}, "unknown keys ['port']"),
    ],
)
def test_bad_definitions_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = _write(tmp_path, {"svc": {**GOOD, **change}})
    with pytest.raises(ValueError) as info:
        load_service_defs(path)
    assert message in str(info.value) and "'svc'" in str(info.value)


def test_bad_definition_names_and_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad service name"):
        load_service_defs(_write(tmp_path, {"Svc": GOOD}))
    with pytest.raises(ValueError, match="expected an object"):
        load_service_defs(_write(tmp_path, {"svc": ["x"]}))
    with pytest.raises(ValueError, match="expected an object of services"):
        load_service_defs(_write(tmp_path, [GOOD]))
    assert load_service_defs(_write(tmp_path, {"svc": GOOD}))["svc"].env == ()


def test_tokens_are_url_safe_and_fresh() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) == 43 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)


def test_pid_and_log_files_refuse_bad_names() -> None:
    assert pid_file("jupyter") == "/opt/kernlet/ipc/svc-jupyter.pid"
    assert log_file("terminal", "/x") == "/x/svc-terminal.log"
    for bad in ("../x", "a b", "a;b", "A"):
        with pytest.raises(ValueError):
            pid_file(bad)
        with pytest.raises(ValueError):
            launch_argv(bad, ["true"])


def test_launch_and_stop_run_for_real(tmp_path: Path) -> None:
    """The shell snippets, run here: pid file written, argv passed untouched, stop works."""
    marker = tmp_path / "args"
    odd = 'it\'s $HOME; `x` "q"'
    script = f'printf "%s\\n" "$@" > {shlex.quote(str(marker))}; exec sleep 30'
    argv = launch_argv("svc", ["sh", "-c", script, "sh", odd], ipc_dir=str(tmp_path))
    proc = subprocess.Popen(argv)
    try:
        pidf = tmp_path / "svc-svc.pid"
        for _ in range(100):
            if marker.exists() and marker.read_text():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert marker.read_text() == odd + "\n"
        assert int(pidf.read_text()) == proc.pid  # the shell became the service
        stop = subprocess.run(stop_argv("svc", grace=2, ipc_dir=str(tmp_path)), timeout=10)
        assert stop.returncode == 0
        assert proc.wait(timeout=5) != 0  # ended by SIGTERM
        assert not pidf.exists()
        again = subprocess.run(stop_argv("svc", ipc_dir=str(tmp_path)), timeout=10)
        assert again.returncode == 3  # not running
    finally:
        proc.kill()
        proc.wait()


def test_stop_kills_a_service_that_ignores_sigterm(tmp_path: Path) -> None:
    argv = launch_argv("stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
                       ipc_dir=str(tmp_path))  # fmt: skip
    proc = subprocess.Popen(argv)
    try:
        pidf = tmp_path / "svc-stubborn.pid"
        for _ in range(100):
            if pidf.exists() and pidf.read_text().strip():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        stop = subprocess.run(stop_argv("stubborn", grace=0.5, ipc_dir=str(tmp_path)), timeout=10)
        assert stop.returncode == 0
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()
