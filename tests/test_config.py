"""Site defaults through Dask's config system: package YAML, config files, env vars, flags."""

import json
import os

import dask
import pytest

from launcher.config import (
    ConfigError,
    listen_address,
    memory_bytes,
    positive_int,
    read_settings,
    seconds,
)
from tests.conftest import launcher_cmd, run


def test_package_defaults_are_loaded_under_launcher():
    assert dask.config.get("launcher.layout") == "compact"
    assert dask.config.get("launcher.startup-timeout") == 30
    settings = read_settings()
    assert settings["layout"].value == "compact" and settings["layout"].source == "default"
    assert settings["nthreads"].value is None


def test_validators():
    assert positive_int("3") == 3
    assert memory_bytes("1GiB") == 1024**3 and memory_bytes(500) == 500
    assert seconds("2m") == 120.0 and seconds(5) == 5.0
    assert listen_address(":8787") == ":8787" and listen_address(8787) == ":8787"
    assert listen_address("[::1]:0") == "[::1]:0" and listen_address("n1:8788") == "n1:8788"
    for check, bad in [
        (listen_address, ":99999"),
        (listen_address, "localhost"),
        (listen_address, True),
        (positive_int, 0),
        (positive_int, True),
        (memory_bytes, "12XB"),
        (memory_bytes, 0),
        (seconds, "soon"),
        (seconds, -1),
    ]:
        with pytest.raises(ConfigError):
            check(bad)


def test_a_malformed_value_names_the_key():
    with (
        dask.config.set({"launcher.nthreads": "abc"}),
        pytest.raises(
            ConfigError, match=r"config key launcher.nthreads \(dask config\): expected a whole"
        ),
    ):
        read_settings()


def test_an_unknown_key_is_reported():
    with (
        dask.config.set({"launcher.nthread": 4}),
        pytest.raises(ConfigError, match=r"launcher\.nthread is unknown"),
    ):
        read_settings()


def plan_json(env, *args):
    result = run(launcher_cmd("--plan", *args, n=None), env=env, timeout=60)
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def test_env_var_and_config_file_and_flag_precedence(tmp_path):
    (tmp_path / "site.yaml").write_text(
        "launcher:\n  memory-limit: 3GiB\n  nthreads: 2\n  interface: lo\n"
    )
    env = {"DASK_CONFIG": str(tmp_path), "DASK_LAUNCHER__NTHREADS": "5"}
    settings = plan_json(env)["settings"]
    assert settings["memory_limit"] == {
        "value": 3 * 1024**3,
        "source": f"config {tmp_path / 'site.yaml'}",
    }
    assert settings["nthreads"] == {"value": 5, "source": "env DASK_LAUNCHER__NTHREADS"}
    assert settings["interface"]["value"] == "lo"
    flagged = plan_json(env, "--nthreads", "7")["settings"]["nthreads"]
    assert flagged == {"value": 7, "source": "flag --nthreads"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DASK_LAUNCHER__NTHREADS": "abc"},
            "config key launcher.nthreads (env DASK_LAUNCHER__NTHREADS): expected a whole number",
        ),
        ({"DASK_LAUNCHER__MEMORY_LIMIT": "12XB"}, "config key launcher.memory-limit"),
        ({"DASK_LAUNCHER__LAYOUT": "ring"}, "config key launcher.layout"),
        (
            {"DASK_LAUNCHER__DASHBOARD": "None"},
            "launcher.dashboard (env DASK_LAUNCHER__DASHBOARD) must not be null",
        ),
    ],
)
def test_bad_config_is_one_clear_line(env, message):
    result = run(launcher_cmd(n=None), env=env, timeout=60)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert result.stderr.count("launcher.") == 1 and "Traceback" not in result.stderr


def test_bad_yaml_type_names_the_file(tmp_path):
    (tmp_path / "x.yaml").write_text("launcher:\n  startup-timeout: [1, 2]\n")
    result = run(launcher_cmd(n=None), env={"DASK_CONFIG": str(tmp_path)}, timeout=60)
    assert result.returncode == 2, result
    assert f"launcher.startup-timeout (config {tmp_path / 'x.yaml'})" in result.stderr


def test_booleans_from_environment_variables():
    from launcher.config import boolean

    assert boolean(0) is False and boolean(1) is True and boolean("no") is False
    with pytest.raises(ConfigError):
        boolean(2)


TICKS = """
from distributed import get_client

def tick(dask_worker):
    return dask_worker._tick_interval

client = get_client()
servers = set(client.run(tick).values()) | set(client.run(tick, nanny=True).values())
servers.add(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval))
print(sorted(servers))
"""


@pytest.mark.parametrize(
    ("env", "seconds"), [({}, 0.1), ({"DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "30ms"}, 0.03)]
)
def test_the_package_sets_a_dask_default_that_users_can_override(script, env, seconds):
    """launcher.yaml's distributed section reaches the scheduler, the nanny and its
    worker process; the user's own Dask config still wins."""
    result = run(launcher_cmd(str(script(TICKS)), n=None), env=env, timeout=60)
    assert result.returncode == 0, result
    assert json.loads(result.stdout) == [seconds], result


SPILL_DIRECTORIES = """
import os
from distributed import get_client

print(sorted(get_client().run(lambda dask_worker: dask_worker.local_directory).values()))
"""


def test_a_site_configs_local_directory_names_the_jobs_scratch(script, tmp_path):
    """``local-directory: $LOCALSCRATCH/dask`` in a site YAML, as dask-jobqueue's configs
    write it: the workers spill below the job's scratch, and a job without that variable
    stops before anything starts, in one line."""
    (tmp_path / "site.yaml").write_text("launcher:\n  local-directory: $LOCALSCRATCH/dask\n")
    scratch = tmp_path / "localscratch"
    env = {"DASK_CONFIG": str(tmp_path), "LOCALSCRATCH": str(scratch)}
    result = run(
        launcher_cmd(str(script(SPILL_DIRECTORIES)), n=3), env=env, cwd=tmp_path, timeout=90
    )
    assert result.returncode == 0, result
    directories = json.loads(result.stdout.replace("'", '"'))
    assert len(directories) == 2, result
    for directory in directories:
        assert directory.startswith(f"{scratch}/dask/dask-launcher-"), result
    assert os.listdir(scratch / "dask") == [], "the run's directory was not removed"

    result = run(launcher_cmd(n=3), env=env | {"LOCALSCRATCH": ""}, cwd=tmp_path, timeout=90)
    assert result.returncode == 2, result
    assert result.stderr == (
        f"launcher: local directory '$LOCALSCRATCH/dask' (config {tmp_path / 'site.yaml'}) "
        "uses $LOCALSCRATCH, which is not set in this job: set it, or point "
        "--local-directory at a directory\n"
    ), result
    assert sorted(os.listdir(tmp_path)) == ["localscratch", "site.yaml", "user_script.py"]
