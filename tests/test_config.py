"""Typed configuration: layering, profiles, env variables, overrides and precise errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from qilin.config import (
    ClusterConfig,
    MarketConfig,
    QilinConfig,
    config_dir,
    load_config,
    load_market,
)
from qilin.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_root(tmp_path, monkeypatch):
    """A private copy of configs/ selected through QILIN_CONFIG_DIR."""
    root = tmp_path / "configs"
    for src in (REPO / "configs").rglob("*.yaml"):
        dst = root / src.relative_to(REPO / "configs")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(src.read_text())
    monkeypatch.setenv("QILIN_CONFIG_DIR", str(root))
    return root


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# -- defaults and profiles --------------------------------------------------------------------


def test_defaults_match_default_yaml_and_dataclasses():
    cfg = load_config(env={})
    assert isinstance(cfg, QilinConfig)
    assert cfg.backend == "auto"
    assert cfg.cluster.mode == "auto" and cfg.cluster.n_workers is None
    assert cfg.cluster.dashboard_address == "127.0.0.1:0" and cfg.cluster.timeout_s == 10.0
    assert cfg.market == MarketConfig()  # default.yaml selects cn, whose profile is the default
    assert cfg.factors.horizons == [1, 5, 10, 20]
    assert cfg.data.synthetic.n_symbols == 500
    assert config_dir() == REPO / "configs"


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("local", {"mode": "local", "threads_per_worker": 1, "n_workers": None}),
        ("threads", {"mode": "threads", "n_workers": 1}),
        ("cuda", {"mode": "cuda", "threads_per_worker": 1}),
        ("remote", {"mode": "remote", "timeout_s": 10.0, "address": ""}),
        ("auto", {"mode": "auto", "n_workers": None}),
    ],
)
def test_cluster_profiles_merge_over_defaults(profile, expected):
    cluster = load_config(cluster=profile, env={}).cluster
    for key, value in expected.items():
        assert getattr(cluster, key) == value, key
    assert cluster.dashboard_address == "127.0.0.1:0"  # untouched default survives the merge


def test_market_profiles():
    us, cn = load_market("us"), load_market("cn")
    assert (us.name, us.periods_per_year, us.lot_size, us.t_plus_one) == ("us", 252, 1, False)
    assert (us.price_limits, us.stamp_duty_rate, us.currency) == (False, 0.0, "USD")
    assert (cn.name, cn.periods_per_year, cn.lot_size, cn.t_plus_one) == ("cn", 242, 100, True)
    assert (cn.commission_rate, cn.min_commission, cn.stamp_duty_rate) == (0.0003, 5.0, 0.0005)


def test_unknown_profiles_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown cluster profile 'mars'.*known: cuda, "
                                          r"local, remote, threads"):
        load_config(cluster="mars", env={})
    with pytest.raises(ConfigError, match=r"unknown market profile 'hk'.*known: cn, us"):
        load_market("hk")


def test_custom_profile_file_sets_mode_and_profile_errors_name_the_file(config_root):
    write_yaml(config_root / "cluster" / "bigbox.yaml", {"mode": "local", "n_workers": 16})
    cfg = load_config(cluster="bigbox", env={})
    assert (cfg.cluster.mode, cfg.cluster.n_workers) == ("local", 16)
    bad = write_yaml(config_root / "cluster" / "broken.yaml", {"mode": "local", "n_wrkers": 2})
    with pytest.raises(ConfigError) as exc:
        load_config(cluster="broken", env={})
    assert str(exc.value).startswith(f"{bad}: unknown config key 'cluster.n_wrkers'")
    assert "n_workers" in str(exc.value)  # the known keys are listed


def test_market_profile_named_by_argument_env_or_override(config_root):
    assert load_config(market="us", env={}).market.name == "us"
    assert load_config(env={"QILIN_MARKET__NAME": "us"}).market.periods_per_year == 252
    # an explicit argument beats the environment; an override beats both
    assert load_config(market="cn", env={"QILIN_MARKET__NAME": "us"}).market.name == "cn"
    cfg = load_config(market="cn", overrides={"market.name": "us"}, env={})
    assert (cfg.market.name, cfg.market.lot_size) == ("us", 1)


# -- environment variables --------------------------------------------------------------------


def test_env_overrides_with_double_underscore_levels():
    env = {
        "QILIN_CLUSTER__N_WORKERS": "4",
        "QILIN_CLUSTER__TIMEOUT_S": "2.5",
        "QILIN_CLUSTER__TLS__CA_FILE": "/etc/ca.pem",
        "QILIN_DATA__SYNTHETIC__SEED": "7",
        "QILIN_FACTORS__HORIZONS": "[1, 2]",
        "QILIN_MARKET__T_PLUS_ONE": "false",
        "QILIN_BACKEND": "cpu",
    }
    cfg = load_config(env=env)
    assert cfg.cluster.n_workers == 4 and cfg.cluster.timeout_s == 2.5
    assert cfg.cluster.tls.ca_file == "/etc/ca.pem" and cfg.cluster.tls.enabled
    assert cfg.data.synthetic.seed == 7 and cfg.factors.horizons == [1, 2]
    assert cfg.market.t_plus_one is False and cfg.backend == "cpu"


def test_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("QILIN_CLUSTER__N_WORKERS", "4")
    assert load_config().cluster.n_workers == 4


def test_env_text_is_parsed_by_the_type_of_the_key():
    cfg = load_config(env={"QILIN_CLUSTER__ADDRESS": "10.0.0.5:8786",   # str stays text
                           "QILIN_DATA__PATH": "2020",                    # str, not int 2020
                           "QILIN_CLUSTER__MEMORY_LIMIT": "4GiB",
                           "QILIN_CLUSTER__N_WORKERS": "null",
                           "QILIN_CLUSTER__STRICT_VERSIONS": "1",
                           "QILIN_MONITORING__METRICS_PORT": " 9200 "})
    assert cfg.cluster.address == "10.0.0.5:8786" and cfg.data.path == "2020"
    assert cfg.cluster.memory_limit == "4GiB" and cfg.cluster.n_workers is None
    assert cfg.cluster.strict_versions is True and cfg.monitoring.metrics_port == 9200


def test_env_mode_selects_the_profile_and_argument_wins_over_env():
    assert load_config(env={"QILIN_CLUSTER__MODE": "threads"}).cluster.n_workers == 1
    cfg = load_config(cluster="local", env={"QILIN_CLUSTER__MODE": "threads"})
    assert (cfg.cluster.mode, cfg.cluster.n_workers, cfg.cluster.threads_per_worker) == (
        "local", None, 1)
    # env values still beat the profile's values
    cfg = load_config(cluster="threads", env={"QILIN_CLUSTER__N_WORKERS": "3"})
    assert cfg.cluster.n_workers == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QILIN_CLUSTER__N_WORKERS": "four"},
         "environment variable QILIN_CLUSTER__N_WORKERS='four': config key 'cluster.n_workers' "
         "expects int | None"),
        ({"QILIN_CLUSTER__TIMEOUT_S": "soon"},
         "environment variable QILIN_CLUSTER__TIMEOUT_S='soon': config key 'cluster.timeout_s' "
         "expects float"),
        ({"QILIN_MARKET__T_PLUS_ONE": "maybe"},
         "environment variable QILIN_MARKET__T_PLUS_ONE='maybe': config key "
         "'market.t_plus_one' expects bool"),
        ({"QILIN_BACKEND": "tpu"},
         "environment variable QILIN_BACKEND='tpu': config key 'backend' expects one of "
         "'auto', 'cpu', 'gpu'"),
        ({"QILIN_FACTORS__HORIZONS": "[1, x]"},
         "environment variable QILIN_FACTORS__HORIZONS='[1, x]': config key "
         "'factors.horizons[1]': expected int, got str 'x'"),
        ({"QILIN_CLUSTR__N_WORKERS": "2"},
         "environment variable QILIN_CLUSTR__N_WORKERS: unknown config key 'clustr' "
         "(known keys at the top level: backend, cluster, data, factors, market, monitoring)"),
        ({"QILIN_CLUSTER__N_WRKERS": "2"},
         "environment variable QILIN_CLUSTER__N_WRKERS: unknown config key 'cluster.n_wrkers'"),
    ],
)
def test_bad_env_values_name_the_variable_and_key(env, message):
    with pytest.raises(ConfigError) as exc:
        load_config(env=env)
    assert str(exc.value).startswith(message), str(exc.value)


def test_non_config_qilin_variables_are_ignored():
    env = {"QILIN_SHARED_DATA": "/data", "QILIN_CONFIG_DIR": str(REPO / "configs"),
           "QILIN_SOMETHING_ELSE": "x", "PATH": "/bin"}
    assert load_config(env=env) == load_config(env={})


# -- overrides and type errors ----------------------------------------------------------------


def test_overrides_are_applied_last():
    cfg = load_config(
        cluster="threads",
        env={"QILIN_CLUSTER__N_WORKERS": "3"},
        overrides={"cluster.n_workers": 2, "market.slippage_bps": 1, "cluster.tls.key_file": "k"},
    )
    assert cfg.cluster.n_workers == 2
    assert cfg.market.slippage_bps == 1.0 and isinstance(cfg.market.slippage_bps, float)
    assert cfg.cluster.tls.key_file == "k"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cluster.n_workers": "4"},
         "overrides: config key 'cluster.n_workers': expected int | None, got str '4'"),
        ({"cluster.n_workers": 2.5},
         "overrides: config key 'cluster.n_workers': expected int | None, got float 2.5"),
        ({"cluster.n_workers": True},
         "overrides: config key 'cluster.n_workers': expected int | None, got bool True"),
        ({"market.t_plus_one": 1},
         "overrides: config key 'market.t_plus_one': expected bool, got int 1"),
        ({"data.validation_policy": "ignore"},
         "overrides: config key 'data.validation_policy': expected one of 'raise', 'drop', "
         "'repair', got str 'ignore'"),
        ({"factors.horizons": 5},
         "overrides: config key 'factors.horizons': expected a list, got 5"),
        ({"cluster.tls": "yes"},
         "overrides: config key 'cluster.tls': expected a section (mapping), got 'yes'"),
        ({"cluster.tls.ca": "x"},
         "overrides: unknown config key 'cluster.tls.ca' (known keys under 'cluster.tls': "
         "ca_file, cert_file, key_file)"),
        ({"backend.name": "cpu"},
         "overrides: config key 'backend': expected one of 'auto', 'cpu', 'gpu', got dict "
         "{'name': 'cpu'}"),
    ],
)
def test_wrong_types_name_the_exact_key_path(overrides, message):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=overrides, env={})
    assert str(exc.value) == message or str(exc.value).startswith(message), str(exc.value)


def test_errors_in_the_base_file_name_the_file(tmp_path):
    bad = write_yaml(tmp_path / "mine.yaml", {"cluster": {"timeout_s": "ten"}})
    with pytest.raises(ConfigError) as exc:
        load_config(path=bad, env={})
    assert str(exc.value) == (
        f"{bad}: config key 'cluster.timeout_s': expected float, got str 'ten'")
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping at the top level"):
        load_config(path=notmap, env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: invalid YAML"):
        load_config(path=broken, env={})
    with pytest.raises(ConfigError, match=r"config file not found: .*absent.yaml"):
        load_config(path=tmp_path / "absent.yaml", env={})


def test_memory_limit_accepts_text_or_bytes():
    assert load_config(overrides={"cluster.memory_limit": 2**30}, env={}).cluster.memory_limit \
        == 2**30
    assert load_config(overrides={"cluster.memory_limit": "2GiB"}, env={}).cluster.memory_limit \
        == "2GiB"


def test_to_dict_round_trips():
    cfg = load_config(cluster="remote", market="us", env={})
    tree = cfg.to_dict()
    assert tree["cluster"]["tls"] == {"ca_file": "", "cert_file": "", "key_file": ""}
    assert tree["market"]["name"] == "us"
    rebuilt = load_config(env={}, overrides={k: v for k, v in tree.items()
                                             if k in ("cluster", "market")})
    assert rebuilt.cluster == cfg.cluster and rebuilt.market == cfg.market


def test_every_dataclass_field_has_a_default_in_default_yaml_or_profiles():
    tree = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    for section in ("data", "factors", "monitoring"):
        fields = {f.name for f in dataclasses.fields(type(getattr(QilinConfig(), section)))}
        assert set(tree[section]) <= fields
    assert set(tree["cluster"]) <= {f.name for f in dataclasses.fields(ClusterConfig)}
