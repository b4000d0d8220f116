"""docker-compose.yml and the Dockerfile agree with the code, checked without Docker.

There is no Docker engine in CI, so these tests read the files: every command a container runs
must parse as a real `loa` command (unknown commands and options fail, nothing is run), every
LOA_ variable must be a field of loa.settings.Settings, and the image's entrypoint must be the
`loa` script that pyproject.toml installs.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from loa.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

LOA_SERVICES = ["migrate", "api", "worker", "scheduler"]
SERVICES = {"postgres", *LOA_SERVICES}


# --- reading the files ------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    return services


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the last build stage, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    froms = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert froms, "the Dockerfile has no FROM"
    return instructions[froms[-1] :]


def dockerfile_exec_form(instruction: str) -> list[str] | None:
    """The last ENTRYPOINT or CMD of the final stage, which must be in JSON (exec) form."""
    values = [args for keyword, args in dockerfile_final_stage() if keyword == instruction]
    if not values:
        return None
    try:
        parsed = json.loads(values[-1])
    except json.JSONDecodeError:
        pytest.fail(f"Dockerfile {instruction} must be in exec form (a JSON list): {values[-1]}")
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), values[-1]
    return parsed


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_final_stage():
        if keyword != "ENV":
            continue
        tokens = shlex.split(arguments)
        if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the ["KEY=value", "KEY"] form
        pairs = [item.partition("=") for item in environment]
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in environment.items()}


def as_argv(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def container_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: entrypoint + command, as Docker combines them."""
    entrypoint = as_argv(service.get("entrypoint"))
    command = as_argv(service.get("command"))
    if entrypoint is None:
        entrypoint = dockerfile_exec_form("ENTRYPOINT") or []
        if command is None:
            command = dockerfile_exec_form("CMD")
    # An entrypoint set in compose drops the image's CMD.
    return entrypoint + (command or [])


# --- checking a command against the click CLI, without running it -----------------------------


@pytest.fixture(scope="module")
def loa_cli() -> click.Group:
    # Imported here, not at module level, so a missing or broken cli.py fails these tests
    # instead of stopping the collection of the whole suite.
    main = importlib.import_module("cli").main
    assert isinstance(main, click.Group), "cli.main should be the click group of `loa`"
    return main


def parse_loa_command(group: click.Group, args: Sequence[str]) -> click.Context:
    """Resolve `loa ARGS` to a leaf command and parse its options strictly.

    Raises click.UsageError for an unknown command or option, a missing argument or a bad value.
    """
    ctx = click.Context(group, info_name="loa")
    command: click.Command = group
    path = ["loa"]
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest or rest[0].startswith("-"):
            raise click.UsageError(f"`{' '.join(path)}` needs a subcommand, got {rest!r}")
        name, *rest = rest
        subcommand = command.get_command(ctx, name)
        if subcommand is None:
            raise click.UsageError(f"`{' '.join(path)}` has no command {name!r}")
        path.append(name)
        if isinstance(subcommand, click.Group):
            ctx = click.Context(subcommand, info_name=name, parent=ctx)
        command = subcommand
    return command.make_context(path[-1], rest, parent=ctx, resilient_parsing=False)


def test_the_checker_rejects_unknown_commands_and_options() -> None:
    @click.group()
    def main() -> None: ...

    @main.group()
    def db() -> None: ...

    @db.command()
    def upgrade() -> None: ...

    @main.command()
    @click.option("--host")
    def serve(host: str | None) -> None: ...

    assert parse_loa_command(main, ["serve", "--host", "0.0.0.0"]).params == {"host": "0.0.0.0"}
    assert parse_loa_command(main, ["db", "upgrade"]).command is upgrade
    for bad in (["serve", "--no-such-option"], ["nope"], ["db"], ["db", "nope"], ["serve", "x"]):
        with pytest.raises(click.UsageError):
            parse_loa_command(main, bad)


# --- the compose file and the image ------------------------------------------------------------


def test_compose_defines_the_services() -> None:
    services = compose_services()
    assert services.keys() >= SERVICES, f"missing services: {sorted(SERVICES - services.keys())}"
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(LOA_SERVICES), "every loa service, and only those, is built from here"
    assert len({services[name].get("image") for name in LOA_SERVICES}) == 1, (
        "the loa services share one image"
    )


def test_services_start_in_order() -> None:
    services = compose_services()
    assert services["postgres"].get("healthcheck"), "postgres needs a healthcheck"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"].get("restart", "no") == "no", "migrate is one-shot"
    for name in ("api", "worker", "scheduler"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_workers_can_be_scaled() -> None:
    worker = compose_services()["worker"]
    assert "container_name" not in worker and "ports" not in worker


@pytest.mark.parametrize("name", LOA_SERVICES)
def test_service_runs_a_real_loa_command(name: str, loa_cli: click.Group) -> None:
    argv = container_argv(compose_services()[name])
    assert argv[:1] == ["loa"], f"{name} runs {argv}, not loa"
    try:
        parse_loa_command(loa_cli, argv[1:])
    except click.UsageError as error:
        pytest.fail(f"service {name}: `{shlex.join(argv)}` is not a valid command: {error}")


def test_image_default_command_is_a_real_loa_command(loa_cli: click.Group) -> None:
    command = dockerfile_exec_form("CMD")
    assert command, "the Dockerfile should have a default CMD"
    try:
        parse_loa_command(loa_cli, command)
    except click.UsageError as error:
        pytest.fail(f"Dockerfile CMD `loa {shlex.join(command)}` is not a valid command: {error}")


def flag_is_set(ctx: click.Context, flag: str) -> bool:
    """Whether the parsed command line has `flag` on, whether the option is declared as
    `--no-x` (value True) or as the off side of `--x/--no-x` (value False)."""
    for param in ctx.command.params:
        if flag in param.opts:
            return ctx.params[param.name or ""] is True
        if flag in param.secondary_opts:
            return ctx.params[param.name or ""] is False
    raise AssertionError(f"`{ctx.command_path}` has no option {flag}")


def test_api_serves_only_the_api_on_all_interfaces(loa_cli: click.Group) -> None:
    api = compose_services()["api"]
    ctx = parse_loa_command(loa_cli, container_argv(api)[1:])
    assert ctx.command.name == "serve"
    assert ctx.params.get("host") == "0.0.0.0"
    assert flag_is_set(ctx, "--no-worker") and flag_is_set(ctx, "--no-scheduler"), ctx.params
    assert any(str(port).endswith("8000") for port in api.get("ports", [])), api.get("ports")


def test_image_entrypoint_is_the_loa_script() -> None:
    assert dockerfile_exec_form("ENTRYPOINT") == ["loa"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # The tests above parse commands with cli.main: that must be what `loa` runs.
    assert pyproject["project"]["scripts"]["loa"] == "cli:main"


def settings_env_names() -> set[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    names |= {
        field.validation_alias.upper()
        for field in Settings.model_fields.values()
        if isinstance(field.validation_alias, str)
    }
    return names


def test_loa_variables_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    known = settings_env_names()
    sources = {"Dockerfile": dockerfile_env()} | {
        f"service {name}": service_environment(service)
        for name, service in compose_services().items()
    }
    checked = 0
    for source, environment in sources.items():
        loa_vars = {k: v for k, v in environment.items() if k.upper().startswith("LOA_")}
        unknown = sorted(set(map(str.upper, loa_vars)) - known)
        assert not unknown, f"{source} sets {unknown}, which are not fields of Settings"
        # The values must also be valid for their fields (a port that is a number, ...).
        for key in [k for k in os.environ if k.upper().startswith("LOA_")]:
            monkeypatch.delenv(key)
        for key, value in loa_vars.items():
            if value is not None:
                monkeypatch.setenv(key, value)
        Settings()
        checked += len(loa_vars)
    assert "LOA_DATABASE_URL" in service_environment(compose_services()["api"])
    assert checked
