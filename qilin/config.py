"""Typed configuration: ``configs/default.yaml`` + cluster and market profiles + overrides.

Precedence, lowest first: the defaults in ``configs/default.yaml``, the cluster profile
``configs/cluster/<mode>.yaml``, the market profile ``configs/markets/<market>.yaml``,
``QILIN_*`` environment variables (``QILIN_CLUSTER__N_WORKERS=4`` sets ``cluster.n_workers``;
``__`` separates levels), then keyword overrides given as dotted keys. Unknown keys and
wrong types raise :class:`~qilin.errors.ConfigError` naming the exact key path and the file,
variable or override it came from.

Examples
--------
>>> cfg = load_config(cluster="threads", market="us", overrides={"cluster.n_workers": 2})
>>> cfg.cluster.mode, cfg.cluster.n_workers, cfg.market.periods_per_year
('threads', 2, 252)
>>> load_config(overrides={"cluster.n_wrokers": 2})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qilin.errors.ConfigError: overrides: unknown config key 'cluster.n_wrokers' (known keys ...)
>>> load_config(env={"QILIN_CLUSTER__N_WORKERS": "four"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
qilin.errors.ConfigError: environment variable QILIN_CLUSTER__N_WORKERS='four': config key \
'cluster.n_workers' expects int | None
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from qilin.errors import ConfigError

CONFIG_DIR_ENV = "QILIN_CONFIG_DIR"


def config_dir() -> Path:
    """Folder holding ``default.yaml``, ``cluster/`` and ``markets/``.

    ``$QILIN_CONFIG_DIR`` when set; else ``qilin/configs`` of an installed wheel (the
    repository's ``configs/`` shipped as package data); else the ``configs/`` folder of the
    source checkout.
    """
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    shipped = package / "configs"
    if (shipped / "default.yaml").is_file():
        return shipped
    return package.parent / "configs"


@dataclass
class TLSConfig:
    """Client TLS files for a remote scheduler (dask ``Security``); empty means no TLS."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file)


@dataclass
class ClusterConfig:
    """How to start or reach a Dask cluster (see :class:`qilin.cluster.ClusterManager`)."""

    mode: Literal["auto", "local", "threads", "cuda", "remote"] = "auto"
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | int = "auto"
    address: str = ""
    scheduler_file: str = ""
    dashboard_address: str = "127.0.0.1:0"
    timeout_s: float = 10.0
    task_timeout_s: float = 3600.0
    check_versions: bool = True
    strict_versions: bool = False
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass
class MarketConfig:
    """A market profile: calendar convention, costs and trading rules."""

    name: str = "cn"
    currency: str = "CNY"
    periods_per_year: int = 242
    lot_size: int = 100
    t_plus_one: bool = True
    price_limits: bool = True
    commission_rate: float = 0.0003
    min_commission: float = 5.0
    slippage_bps: float = 5.0
    stamp_duty_rate: float = 0.0005
    risk_free_rate: float = 0.0
    #: A bar with volume 0 is not tradable (orders wait, recorded as ``no_volume``).
    block_zero_volume: bool = True
    #: Short positions allowed (portfolio long-short books); False refuses them.
    allow_short: bool = False


@dataclass
class SyntheticConfig:
    """Size and seed of the embedded synthetic universe."""

    n_symbols: int = 500
    n_days: int = 1500
    seed: int = 42
    start: str = "2016-01-04"


@dataclass
class DataConfig:
    """Where bars come from and how they are validated."""

    path: str = ""
    validation_policy: Literal["raise", "drop", "repair"] = "raise"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class FactorsConfig:
    """Factor computation defaults."""

    cache_dir: str = ".qilin_cache/factors"
    dtype: Literal["float32", "float64"] = "float64"
    horizons: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    quantiles: int = 5


@dataclass
class MonitoringConfig:
    """Exporter address and alert thresholds (defaults from operations practice)."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    latency_threshold_s: float = 0.1
    cpu_threshold_pct: float = 80.0
    memory_threshold_pct: float = 80.0
    gpu_memory_threshold_pct: float = 90.0
    error_rate_threshold: float = 0.05
    alert_cooldown_s: float = 300.0


@dataclass
class QilinConfig:
    """The whole configuration."""

    backend: Literal["auto", "cpu", "gpu"] = "auto"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    data: DataConfig = field(default_factory=DataConfig)
    factors: FactorsConfig = field(default_factory=FactorsConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for manifests and ``qilin info``)."""
        return dataclasses.asdict(self)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


class _EnvText(str):
    """The raw text of a ``QILIN_*`` variable; parsed by the type of the key it sets."""

    variable: str


_NULL_TEXTS = ("", "null", "none", "~")
_BOOL_TEXTS = {"true": True, "1": True, "yes": True, "on": True,
               "false": False, "0": False, "no": False, "off": False}


def _is_config_variable(rest: str) -> bool:
    """``QILIN_X__Y`` and ``QILIN_<top-level key>`` configure; other ``QILIN_*`` do not."""
    top_level = {f.name for f in dataclasses.fields(QilinConfig)}
    return "__" in rest or rest.lower() in top_level


def _env_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, _EnvText]]:
    """Map dotted key -> (variable name, raw text) for every configuring variable."""
    found: dict[str, tuple[str, _EnvText]] = {}
    for key, raw in env.items():
        if not key.startswith("QILIN_"):
            continue
        rest = key[len("QILIN_"):]
        if not _is_config_variable(rest):
            continue
        dotted = ".".join(part.lower() for part in rest.split("__"))
        if any(part == "" for part in dotted.split(".")):
            raise ConfigError(f"environment variable {key}: empty key segment in {dotted!r}")
        text = _EnvText(raw)
        text.variable = key
        found[dotted] = (key, text)
    return found


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce_env(text: _EnvText, tp: Any, path: str) -> Any:
    """Parse an environment variable's text as the type of the key it sets."""

    def fail() -> ConfigError:
        return ConfigError(
            f"environment variable {text.variable}={str(text)!r}: config key {path!r} "
            f"expects {_type_name(tp)}"
        )

    origin = typing.get_origin(tp)
    raw = str(text)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and raw.strip().lower() in _NULL_TEXTS:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce_env(text, arg, path)
            except ConfigError:
                pass
        raise fail()
    if tp is str:
        return raw
    if origin is Literal:
        if raw not in typing.get_args(tp):
            raise fail()
        return raw
    if tp is bool:
        if raw.strip().lower() not in _BOOL_TEXTS:
            raise fail()
        return _BOOL_TEXTS[raw.strip().lower()]
    if tp is int or tp is float:
        try:
            return tp(raw.strip())
        except ValueError:
            raise fail() from None
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise fail() from None
    try:
        return _coerce(parsed, tp, path)
    except ConfigError as exc:
        raise ConfigError(f"environment variable {text.variable}={raw!r}: {exc}") from None


def _coerce(value: Any, tp: Any, path: str) -> Any:
    if isinstance(value, _EnvText):
        return _coerce_env(value, tp, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(
            f"config key {path!r}: expected {_type_name(tp)}, got {type(value).__name__} "
            f"{value!r}"
        )
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(
                f"config key {path!r}: expected {_type_name(tp)}, got {type(value).__name__} "
                f"{value!r}"
            )
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key {path!r}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(
        f"config key {path!r}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key {path!r}: expected a section (mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            where = f"under {path!r}" if path else "at the top level"
            raise ConfigError(
                f"unknown config key {full!r} (known keys {where}: {', '.join(sorted(names))})"
            )
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def load_config(
    cluster: str | None = None,
    market: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> QilinConfig:
    """Load the typed configuration.

    Parameters
    ----------
    cluster : str, optional
        Cluster profile name (``local``, ``threads``, ``cuda``, ``remote``); its YAML is
        merged over the defaults. Defaults to the ``cluster.mode`` of the defaults.
    market : str, optional
        Market profile name (``cn``, ``us``); defaults to ``market.name`` of the defaults.
    overrides : mapping, optional
        Dotted keys to values, applied last (``{"cluster.n_workers": 4}``).
    env : mapping, optional
        Environment to read ``QILIN_*`` variables from (``os.environ`` by default).
    path : path, optional
        A YAML file used instead of ``configs/default.yaml``.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types, missing profile files, invalid YAML.
    """
    root = config_dir()
    base_path = Path(path) if path else root / "default.yaml"
    tree = _read_yaml(base_path)
    _check_layer(tree, str(base_path))
    env_vars = _env_overrides(os.environ if env is None else env)
    for dotted, (variable, text) in env_vars.items():
        single: dict[str, Any] = {}
        _set_path(single, dotted, text)
        _check_layer(single, f"environment variable {variable}")
    over_tree: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        _set_path(over_tree, key, value)
    _check_layer(over_tree, "overrides")
    env_flat = {dotted: text for dotted, (_, text) in env_vars.items()}

    def select(section: str, key: str, explicit: str | None) -> str | None:
        """Profile name: overrides, then the explicit argument, then env, then defaults."""
        dotted = f"{section}.{key}"
        node = over_tree.get(section)
        if isinstance(node, dict) and node.get(key) is not None:
            return str(node[key])
        if explicit:
            return explicit
        if env_flat.get(dotted) not in (None, ""):
            return str(env_flat[dotted])
        node = tree.get(section)
        return str(node[key]) if isinstance(node, dict) and node.get(key) else None

    cluster_name = select("cluster", "mode", cluster)
    market_name = select("market", "name", market)
    # The selectors have done their job; the profiles below set mode and name themselves.
    for dotted in ("cluster.mode", "market.name"):
        env_flat.pop(dotted, None)
        section, key = dotted.split(".")
        if isinstance(over_tree.get(section), dict):
            over_tree[section].pop(key, None)
    if cluster_name:
        tree = _merge_profile(tree, root / "cluster", "cluster", "mode", cluster_name)
    if market_name:
        tree = _merge_profile(tree, root / "markets", "market", "name", market_name)
    env_tree: dict[str, Any] = {}
    for dotted, text in env_flat.items():
        _set_path(env_tree, dotted, text)
    tree = _deep_merge(_deep_merge(tree, env_tree), over_tree)
    return _build(QilinConfig, tree, "")


def _check_layer(layer: dict[str, Any], source: str) -> None:
    """Validate one layer on its own so that an error names the file or variable at fault."""
    try:
        _build(QilinConfig, layer, "")
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(source):
            raise
        raise ConfigError(f"{source}: {message}") from None


def _merge_profile(
    tree: dict[str, Any], folder: Path, section: str, key: str, name: str
) -> dict[str, Any]:
    """Merge ``folder/<name>.yaml`` into ``tree[section]``; ``auto`` has no file."""
    if section == "cluster" and name == "auto":
        return _deep_merge(tree, {section: {key: "auto"}})
    profile_path = folder / f"{name}.yaml"
    if not profile_path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(
            f"unknown {section} profile {name!r}: no file {profile_path} "
            f"(known: {', '.join(known)})"
        )
    profile = _read_yaml(profile_path)
    profile.setdefault(key, name)
    layer = {section: profile}
    _check_layer(layer, str(profile_path))
    return _deep_merge(tree, layer)


def load_market(name: str) -> MarketConfig:
    """The market profile ``configs/markets/<name>.yaml`` over the defaults.

    Examples
    --------
    >>> m = load_market("cn")
    >>> m.lot_size, m.t_plus_one, m.periods_per_year
    (100, True, 242)
    """
    return load_config(market=name, env={}).market
