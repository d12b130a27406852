"""Typed configuration: ``configs/default.yaml`` + cluster and market profiles + overrides.

Precedence, lowest first: the defaults in ``configs/default.yaml``, the cluster profile
``configs/cluster/<mode>.yaml``, the market profile ``configs/markets/<market>.yaml``,
``QILIN_*`` environment variables (``QILIN_CLUSTER__N_WORKERS=4`` sets ``cluster.n_workers``;
``__`` separates levels), then keyword overrides given as dotted keys. Unknown keys and
wrong types raise :class:`~qilin.errors.ConfigError` naming the exact key path.

Examples
--------
>>> cfg = load_config(cluster="threads", market="us", overrides={"cluster.n_workers": 2})
>>> cfg.cluster.mode, cfg.cluster.n_workers, cfg.market.periods_per_year
('threads', 2, 252)
>>> load_config(overrides={"cluster.n_wrokers": 2})
Traceback (most recent call last):
...
qilin.errors.ConfigError: unknown config key 'cluster.n_wrokers' (known keys under 'cluster': address, dashboard_address, memory_limit, mode, n_workers, scheduler_file, threads_per_worker, timeout_s, tls)
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

    ``$QILIN_CONFIG_DIR`` when set, else the ``configs/`` folder of the source checkout.
    """
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "configs"


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
    memory_limit: str = "auto"
    address: str = ""
    scheduler_file: str = ""
    dashboard_address: str = "127.0.0.1:0"
    timeout_s: float = 10.0
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


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith("QILIN_") or key in (CONFIG_DIR_ENV, "QILIN_BACKEND_FALLBACK"):
            continue
        dotted = key[len("QILIN_"):].lower().replace("__", ".")
        _set_path(tree, dotted, yaml.safe_load(raw) if raw != "" else "")
    return tree


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key {path!r}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key {path!r}: expected {_type_name(tp)}, got {value!r}")
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
    tree = _read_yaml(Path(path) if path else root / "default.yaml")
    env_tree = _env_overrides(os.environ if env is None else env)
    over_tree: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        _set_path(over_tree, key, value)

    def pick(section: str, key: str, explicit: str | None) -> str | None:
        for source in (over_tree, env_tree):
            val = source.get(section, {}).get(key) if isinstance(source.get(section), dict) else None
            if val is not None:
                return str(val)
        return explicit or tree.get(section, {}).get(key)

    cluster_name = pick("cluster", "mode", cluster)
    if cluster_name and cluster_name != "auto":
        profile = root / "cluster" / f"{cluster_name}.yaml"
        if not profile.exists():
            known = sorted(p.stem for p in (root / "cluster").glob("*.yaml"))
            raise ConfigError(f"unknown cluster profile {cluster_name!r} (known: {', '.join(known)})")
        tree = _deep_merge(tree, {"cluster": _read_yaml(profile)})
    market_name = pick("market", "name", market)
    if market_name:
        profile = root / "markets" / f"{market_name}.yaml"
        if not profile.exists():
            known = sorted(p.stem for p in (root / "markets").glob("*.yaml"))
            raise ConfigError(f"unknown market profile {market_name!r} (known: {', '.join(known)})")
        tree = _deep_merge(tree, {"market": _read_yaml(profile)})
    tree = _deep_merge(_deep_merge(tree, env_tree), over_tree)
    return _build(QilinConfig, tree, "")


def load_market(name: str) -> MarketConfig:
    """The market profile ``configs/markets/<name>.yaml`` over the defaults.

    Examples
    --------
    >>> m = load_market("cn")
    >>> m.lot_size, m.t_plus_one, m.periods_per_year
    (100, True, 242)
    """
    return load_config(market=name, env={}).market
