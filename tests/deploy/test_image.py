"""deploy/Dockerfile and the commands the manifests run in its image.

No container engine runs on these machines, so the image is not built here: these tests read the
Dockerfile, and check every command of every container against this project's installed environment
(the same lock the image installs): the module or entry point exists, and its flags are its own.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import uvicorn.main  # noqa: F401  # the click command, for its parser
import yaml

from core.settings import PROJECT_ROOT
from tests.deploy.manifests import (
    BASE,
    DEPLOY,
    DOCKERFILE,
    OVERLAY,
    Container,
    base_documents,
    containers,
    environment_names,
    expand,
    generated_config_maps,
    pod_spec,
    workloads,
)


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments left out)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _index(keyword: str, pattern: str) -> int:
    found = [i for i, (k, rest) in enumerate(instructions()) if k == keyword and re.search(pattern, rest)]
    assert found, f"no {keyword} matching {pattern!r} in {DOCKERFILE}"
    return found[0]


def test_the_image_installs_the_lock_then_the_project_without_dependencies():
    copy_lock = _index("COPY", r"^requirements\.lock ")
    install_lock = _index("RUN", r"pip install -r requirements\.lock")
    copy_project = _index("COPY", r"^\. ")
    install_project = _index("RUN", r"pip install --no-deps -e \.")
    assert copy_lock < install_lock < copy_project < install_project


def test_the_image_runs_as_the_user_the_pods_require():
    (user,) = [rest for keyword, rest in instructions() if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root user, so runAsNonRoot can check it"
    for workload in workloads(base_documents()):
        security = pod_spec(workload)["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid or uid))
    assert _index("USER", ".") > _index("RUN", r"pip install --no-deps")  # installs as root, runs as the user


def test_the_base_python_is_one_the_project_supports():
    (default,) = [rest for keyword, rest in instructions() if keyword == "ARG" and rest.startswith("PYTHON_IMAGE=")]
    version = re.search(r"python:(\d+)\.(\d+)", default)
    assert version
    requires = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.findall(r"(\d+)\.(\d+)", requires)
    assert tuple(map(int, low)) <= tuple(map(int, version.groups())) < tuple(map(int, high))
    assert tuple(map(int, version.groups())) == sys.version_info[:2], "the image's Python is the one tested here"


def test_the_image_has_what_the_pods_point_at():
    """The working directory holds prefect.yaml (the set-up Job deploys from it), and the Prefect
    logging config the pods name is written at build time by the project's own command."""
    (workdir,) = [rest for keyword, rest in instructions() if keyword == "WORKDIR"]
    maps = generated_config_maps(BASE, OVERLAY)
    setup = [c for c in containers(base_documents()) if c.workload["metadata"]["name"] == "prefect-setup"]
    assert {environment_names(c, maps)["MARKETPLACE_PROJECT_DIR"] for c in setup} == {workdir}
    assert {c.spec.get("workingDir", workdir) for c in containers(base_documents())} == {workdir}
    logging_config = maps["prefect-client-config"]["PREFECT_LOGGING_SETTINGS_PATH"]
    assert maps["prefect-server-config"]["PREFECT_LOGGING_SETTINGS_PATH"] == logging_config
    _index("RUN", rf"python -m core\.logging prefect-config {re.escape(logging_config)}")


def test_the_logging_config_command_writes_a_prefect_config(tmp_path):
    path = tmp_path / "prefect-logging.yml"
    result = subprocess.run(
        [sys.executable, "-m", "core.logging", "prefect-config", str(path)], capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(path.read_text())["handlers"]["console"]["formatter"] == "marketplace_json"


def ignored(relative: str) -> bool:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, f"**/{pattern}") for p in prefixes for pattern in patterns
    )


def test_the_build_context_keeps_what_the_processes_read():
    """Every package, and the files the code reads beside it (through PROJECT_ROOT)."""
    packages = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    needed = [pattern.rstrip("*") for pattern in packages["include"]]
    needed += ["policies/https_required.rego", "prefect.yaml", "pyproject.toml", "requirements.lock", "alembic.ini"]
    needed += [str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "storage" / "migrations").rglob("*.py")]
    assert [path for path in needed if ignored(path)] == []
    assert ignored(".venv/bin/python") and ignored(".git/HEAD") and ignored("tests/conftest.py")


def commands() -> list[Container]:
    seen, unique = set(), []
    for container in containers(base_documents()):
        argv = tuple(
            expand(arg, environment_names(container, generated_config_maps(BASE, OVERLAY))) for arg in container.argv
        )
        if argv not in seen:
            seen.add(argv)
            unique.append(container)
    return unique


def _console_scripts() -> set[str]:
    return {ep.name for ep in entry_points(group="console_scripts")}


def _help(argv: list[str]) -> str:
    """The command's --help, run with this environment's interpreter and scripts."""
    env = {**os.environ, "COLUMNS": "250", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def _flags(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("-") and arg != "-m"]


@pytest.mark.parametrize("container", commands(), ids=lambda c: c.id)
def test_every_command_exists_with_its_flags(container):
    """`python -m M`: the module exists and runs as a script; `uvicorn`/`prefect`: the entry point
    exists; the flags given appear in the command's --help (modules without an argument parser get none)."""
    argv = [expand(arg, environment_names(container, generated_config_maps(BASE, OVERLAY))) for arg in container.argv]
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        if module.split(".")[0] == "gateway" and importlib.util.find_spec("gateway") is None:
            pytest.skip("the gateway (gateway/) is not on this branch yet")
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, module
        source = Path(spec.origin).read_text()
        if spec.submodule_search_locations:  # a package: its __main__ runs
            source = Path(spec.submodule_search_locations[0], "__main__.py").read_text()
        assert 'if __name__ == "__main__":' in source, f"{module} does not run as a script"
        if not any(parser in source for parser in ("argparse", "prefect.cli")):
            assert _flags(argv[3:]) == [], f"{module} reads no flags"
            return
        help_text = _help([sys.executable, "-m", module, *_subcommand(module, argv[3:])])
    else:
        assert argv[0] in _console_scripts(), f"{argv[0]} is no entry point of the installed packages"
        if argv[0] == "uvicorn":
            _check_uvicorn_arguments(argv[1:])
        help_text = _help([argv[0], *_subcommand(argv[0], argv[1:])])
    for flag in _flags(argv):
        assert re.search(rf"(^|\s|\[|,){re.escape(flag)}(\s|=|\]|,|$)", help_text, re.M), f"{flag} not in --help"


def _subcommand(program: str, args: list[str]) -> list[str]:
    """The words naming a subcommand of Prefect's command line (`server database upgrade`): its
    flags carry their values with `=`, so every other word is one."""
    return [a for a in args if not a.startswith("-")] if "prefect" in program else []


def _check_uvicorn_arguments(args: list[str]) -> None:
    """uvicorn's own parser takes the arguments (types included: its grace period is whole seconds),
    and the application they name imports."""
    command = sys.modules["uvicorn.main"].main  # the click command (the package's `main` is its callback)
    params = command.make_context("uvicorn", list(args)).params
    module, _, attribute = params["app"].partition(":")
    imported = __import__(module, fromlist=[attribute])
    assert callable(getattr(imported, attribute)), params["app"]
