"""The start-up shortcuts in launcher/speedups.py change nothing but the time taken."""

import json
import os
import textwrap
from pathlib import Path

import dask
import distributed
import tornado
import yaml

from launcher.speedups import cheap_import
from tests.conftest import PYTHON, run

DEFAULT_FILES = [
    Path(dask.__file__).with_name("dask.yaml"),
    Path(distributed.__file__).with_name("distributed.yaml"),
]

DUMP_CONFIG = """
import json, sys, yaml
original = yaml.safe_load
{imports}
assert yaml.safe_load is original, "yaml.safe_load was left replaced"
import dask
config = {{k: v for k, v in dask.config.config.items() if k != "launcher"}}
dask.config.refresh()  # what a nanny's worker process does first
assert yaml.safe_load is original, "yaml.safe_load was left replaced"
refreshed = {{k: v for k, v in dask.config.config.items() if k != "launcher"}}
print(json.dumps([config, refreshed], sort_keys=True, default=repr))
"""


def test_the_c_loader_reads_dasks_default_files_as_pyyaml_does():
    plain = [yaml.safe_load(path.read_text()) for path in DEFAULT_FILES]
    with cheap_import():
        fast = [yaml.safe_load(path.read_text()) for path in DEFAULT_FILES]
    assert fast == plain and all(fast)


def test_the_c_loader_is_used_only_inside_and_put_back():
    original = yaml.safe_load
    with cheap_import():
        replaced = yaml.safe_load
    assert replaced is not original
    assert getattr(replaced, "keywords", {}).get("Loader") is yaml.CSafeLoader
    assert yaml.safe_load is original


def test_importing_through_the_launcher_gives_the_same_dask_config(tmp_path):
    """User config files included: they are parsed during the same import, and again
    by ``dask.config.refresh``."""
    (tmp_path / "site.yaml").write_text(
        textwrap.dedent("""\
            distributed:
              worker:
                memory:
                  target: 0.42
              comm:
                timeouts: {connect: 17s}
            array: {chunk-size: 64MiB}
        """)
    )
    env = {**os.environ, "DASK_CONFIG": str(tmp_path)}
    plain = run([PYTHON, "-c", DUMP_CONFIG.format(imports="import distributed")], env=env)
    ours = run(
        [
            PYTHON,
            "-c",
            DUMP_CONFIG.format(
                imports="import launcher.config\n"
                "from launcher.speedups import import_distributed\n"
                "import_distributed()"
            ),
        ],
        env=env,
    )
    assert plain.returncode == 0, plain
    assert ours.returncode == 0, ours
    imported, refreshed = json.loads(ours.stdout)
    for config in (imported, refreshed):
        assert config["distributed"]["worker"]["memory"]["target"] == 0.42
        assert config["distributed"]["comm"]["timeouts"]["connect"] == "17s"
    assert [imported, refreshed] == json.loads(plain.stdout)


ACCEPT_TLS = """
import asyncio, ssl, tornado.netutil
from launcher import security as job_security
from launcher.speedups import import_distributed

import_distributed()
from distributed.comm import connect, listen
from distributed.security import Security

creds = job_security.make_credentials()
job_security.apply(creds)
security = Security()  # reads the job's credentials from dask config, as the ranks do

async def echo(comm):
    await comm.write(await comm.read())
    await comm.close()

async def main():
    listener = listen("tls://127.0.0.1:0", echo, **security.get_listen_args("scheduler"))
    await listener.start()
    comm = await connect(listener.contact_address, **security.get_connection_args("client"))
    await comm.write({"ping": 1})
    answer = await comm.read()
    await comm.close()
    # Without a client certificate the server must still refuse (mutual TLS).
    bare = ssl.create_default_context(cadata=creds["cert"])
    bare.check_hostname = False
    try:
        stranger = await connect(listener.contact_address, timeout=5, ssl_context=bare)
        await stranger.write({"ping": 2})
        refused = await stranger.read() is None
    except Exception:
        refused = True
    listener.stop()
    defaults = tornado.netutil._client_ssl_defaults  # tornado 6.5 and older: built at import
    built = defaults.cache_info().currsize if hasattr(defaults, "cache_info") else "at-import"
    print(answer, refused, built)

asyncio.run(main())
"""


def test_an_accepted_tls_connection_builds_no_default_context_and_still_checks_clients():
    result = run([PYTHON, "-c", ACCEPT_TLS], timeout=60)
    assert result.returncode == 0, result
    # tornado 6.6 builds its default client context on first use: the accept must not
    built = "0" if tornado.version_info >= (6, 6) else "at-import"
    assert result.stdout.split() == ["{'ping':", "1}", "True", built], result


REFRESH_LOADER = """
import dask.config, yaml
from launcher.speedups import import_distributed

import_distributed()
seen = []
collect = dask.config.collect

def spy(*args, **kwargs):
    seen.append(getattr(yaml.safe_load, "keywords", {}).get("Loader"))
    return collect(*args, **kwargs)

dask.config.collect = spy
dask.config.refresh()
print(seen == [yaml.CSafeLoader], yaml.safe_load.__module__)
"""


def test_a_config_refresh_reads_files_with_the_c_loader():
    """What a nanny's worker process does first (distributed's WorkerProcess._run)."""
    result = run([PYTHON, "-c", REFRESH_LOADER], timeout=60)
    assert result.returncode == 0, result
    assert result.stdout.split() == ["True", "yaml"], result
