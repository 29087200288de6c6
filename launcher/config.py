"""The launcher's settings in Dask's config system, typed and checked, with their origin.

Defaults live in ``launcher.yaml`` beside this module (as distributed and dask-jobqueue
ship theirs); sites override them with the usual Dask config files and
``DASK_LAUNCHER__*`` environment variables. The same validators check flags, so a value
means the same thing wherever it is set.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launcher.speedups import YAML_LOADER, cheap_import

with cheap_import():
    import dask
    import dask.config
from dask.utils import parse_bytes, parse_timedelta

DEFAULTS_FILE = Path(__file__).with_name("launcher.yaml")
with DEFAULTS_FILE.open() as _f:
    PACKAGE_DEFAULTS: dict[str, Any] = yaml.load(_f, Loader=YAML_LOADER)
dask.config.update_defaults({"launcher": PACKAGE_DEFAULTS["launcher"]})


def set_distributed_defaults() -> None:
    """The ``distributed`` section of launcher.yaml, once distributed is imported: the
    import registers distributed's own defaults, which would replace ours if ours came
    first. Values the user set in their Dask config still win."""
    dask.config.update_defaults({"distributed": PACKAGE_DEFAULTS["distributed"]})


LAYOUTS = ("compact", "dedicated")


class ConfigError(ValueError):
    """A setting with a value the launcher cannot use."""


@dataclass(frozen=True)
class Setting:
    """A value and where it came from, so ``--plan`` can explain every number."""

    value: Any
    source: str


def positive_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"expected a whole number >= 1, got {raw!r}")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"expected a whole number >= 1, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"expected a whole number >= 1, got {raw!r}")
    return value


def memory_bytes(raw: Any) -> int:
    """Bytes from an int or a string such as ``"4GiB"``/``"500MB"`` (Dask's units)."""
    if isinstance(raw, bool):
        raise ConfigError(f"expected a memory size such as 4GiB or 500MB, got {raw!r}")
    try:
        value = int(raw) if isinstance(raw, int) else parse_bytes(str(raw).strip())
    except Exception:  # dask raises ValueError or TypeError by input
        raise ConfigError(f"expected a memory size such as 4GiB or 500MB, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"expected a memory size above zero, got {raw!r}")
    return value


def seconds(raw: Any) -> float:
    """Seconds from a number or a Dask time string such as ``"30s"`` or ``"2m"``."""
    if isinstance(raw, bool):
        raise ConfigError(f"expected a duration such as 30 or 30s, got {raw!r}")
    try:
        value = float(parse_timedelta(raw, default="seconds"))
    except Exception:  # dask raises ValueError, KeyError or AttributeError by input type
        raise ConfigError(f"expected a duration such as 30 or 30s, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"expected a duration above zero, got {raw!r}")
    return value


def layout(raw: Any) -> str:
    if raw not in LAYOUTS:
        raise ConfigError(f"expected one of {', '.join(LAYOUTS)}, got {raw!r}")
    return raw


def text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"expected a non-empty string, got {raw!r}")
    return raw


def listen_address(raw: Any) -> str:
    """``host:port``, ``:port`` or a bare port (made ``:port``), the port 0-65535.

    distributed took ``:99999`` for a port in use and served the dashboard elsewhere,
    saying "is taken"."""
    value = "" if isinstance(raw, bool) else str(raw).strip()
    _, colon, port = value.rpartition(":")
    if not (port.isdigit() and int(port) <= 65535):
        raise ConfigError(
            f"expected an address such as :8787 or localhost:8787 (port 0-65535), got {raw!r}"
        )
    return value if colon else f":{port}"


def boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    # DASK_LAUNCHER__TLS=0 arrives as the int 0: Dask parses environment values.
    word = str(raw).strip().lower()
    if word in ("true", "yes", "1", "false", "no", "0"):
        return word in ("true", "yes", "1")
    raise ConfigError(f"expected true or false, got {raw!r}")


#: Every key under ``launcher:`` with the check its value must pass (None is always
#: allowed where the package default is None: it means "derive from the allocation").
VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "layout": layout,
    "nthreads": positive_int,
    "memory-limit": memory_bytes,
    "local-directory": text,
    "interface": text,
    "dashboard": boolean,
    "tls": boolean,
    "nanny": boolean,
    "progress": boolean,
    "progress-interval": seconds,
    "login-host": text,
    "dashboard-address": listen_address,
    "startup-timeout": seconds,
    "shutdown-timeout": seconds,
    "interrupt-grace": seconds,
    "paused-timeout": seconds,
}


def env_var_name(key: str) -> str:
    """The environment variable of a ``launcher`` key."""
    return dask_env_var(f"launcher.{key}")


def dask_env_var(key: str) -> str:
    """The environment variable Dask reads a dotted config key from:
    ``distributed.worker.daemon`` -> ``DASK_DISTRIBUTED__WORKER__DAEMON``."""
    return "DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split("."))


def dask_export(key: str, value: Any) -> str:
    """``export DASK_A__B_C=value``: what Dask reads from the environment on every rank.

    Dask lowers the names in a variable's name, not in its value, so a key with
    capitals goes into a dict under its parent: distributed.worker.resources.GPU=1 is
    ``DASK_DISTRIBUTED__WORKER__RESOURCES="{'GPU': 1}"``, where
    ``DASK_DISTRIBUTED__WORKER__RESOURCES__GPU=1`` would name a resource "gpu"."""
    parts = key.split(".")
    cased = next((i for i, part in enumerate(parts) if part != part.lower()), len(parts))
    for part in reversed(parts[cased:]):
        value = {part: value}
    name = dask_env_var(".".join(parts[:cased]))
    if isinstance(value, Mapping):
        return f'export {name}="{dict(value)!r}"'
    if isinstance(value, str):
        return f"export {name}={shlex.quote(value)}"
    if isinstance(value, (bool, int, float)) or value is None:
        return f"export {name}={value}"
    return f"export {name}=..."


def _yaml_files() -> list[Path]:
    files: list[Path] = []
    for entry in dask.config.paths:
        path = Path(entry)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        elif path.is_file():
            files.append(path)
    return files


def launcher_sections() -> list[tuple[Path, set[str]]]:
    """Each Dask config file with a ``launcher:`` section, and the keys it sets.

    Read once per run, and only files that mention "launcher" are parsed: Dask's config
    directories hold other packages' files (dask-jobqueue's large jobqueue.yaml in every
    tutorial user's ~/.config/dask), and every rank reads them at start-up.
    """
    sections = []
    for path in _yaml_files():
        try:
            text = path.read_text()
            if "launcher" not in text:
                continue
            data = yaml.load(text, Loader=YAML_LOADER) or {}
        except (OSError, yaml.YAMLError):
            continue
        section = data.get("launcher") if isinstance(data, dict) else None
        if isinstance(section, dict):
            sections.append((path, {str(k).replace("_", "-") for k in section}))
    return sections


def source_of(key: str, sections: list[tuple[Path, set[str]]]) -> str:
    """Human-readable origin of ``launcher.<key>``: env var, file, or package default."""
    env = env_var_name(key)
    if env in os.environ:
        return f"env {env}"
    files = [path for path, keys in sections if key in keys]
    path = files[-1] if files else None  # the last one wins
    if path is not None:
        return f"config {path}"
    if dask.config.get(f"launcher.{key}") != PACKAGE_DEFAULTS["launcher"][key]:
        return "dask config"
    return "default"


def read_settings() -> dict[str, Setting]:
    """Every launcher setting from Dask's config, checked; errors name the key."""
    unknown = set(dask.config.get("launcher", {})) - set(VALIDATORS)
    unknown -= {k.replace("-", "_") for k in VALIDATORS}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"config key launcher.{key} is unknown; known keys: {', '.join(VALIDATORS)}"
        )
    settings = {}
    sections = launcher_sections()
    for key, check in VALIDATORS.items():
        raw = dask.config.get(f"launcher.{key}")
        source = source_of(key, sections)
        if raw is None:
            if PACKAGE_DEFAULTS["launcher"][key] is not None:
                raise ConfigError(f"config key launcher.{key} ({source}) must not be null")
            settings[key] = Setting(None, source)
            continue
        try:
            settings[key] = Setting(check(raw), source)
        except ConfigError as err:
            raise ConfigError(f"config key launcher.{key} ({source}): {err}") from None
    return settings
