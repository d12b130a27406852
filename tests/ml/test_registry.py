"""ModelRegistry: safe formats, checksums, feature checks, aliases + audit, concurrent saves."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from qilin.errors import DataError, ParameterError
from qilin.ml.models import RandomForestModel, RidgeModel, XGBoostModel
from qilin.ml.registry import ModelRegistry, RegistryError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 3)).astype(np.float32)
Y = X[:, 0] - 0.5 * X[:, 2] + 0.1 * RNG.normal(size=300)


@pytest.fixture()
def xgb_model():
    m = XGBoostModel(n_estimators=20, max_depth=3, early_stopping_rounds=None, n_jobs=1)
    return m.fit(X, Y)


@pytest.mark.parametrize("fmt", ["ubj", "json"])
def test_xgboost_roundtrip_same_predictions(tmp_path, xgb_model, fmt):
    reg = ModelRegistry(tmp_path)
    v = reg.save("alpha", xgb_model, metrics={"rank_ic": 0.04}, data_fingerprint="abc",
                 processors={"processors": [{"name": "fillna"}]}, fmt=fmt)
    mv = reg.load("alpha", v)
    np.testing.assert_array_equal(mv.model.predict(X), xgb_model.predict(X))
    meta = mv.meta
    assert meta["artifact"] == f"model.{fmt}"
    assert meta["features"] == ["f0", "f1", "f2"] and meta["data_fingerprint"] == "abc"
    assert {"xgboost", "numpy", "skops"} <= set(meta["versions"]) and meta["created"]
    assert meta["metrics"]["rank_ic"] == 0.04
    assert "git_commit" in meta
    files = sorted(p.name for p in mv.path.iterdir())
    assert files == sorted(["checksums.json", "meta.json", f"model.{fmt}"])
    assert not any(p.suffix in (".pkl", ".pickle") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("cls", [RidgeModel, RandomForestModel])
def test_sklearn_roundtrip_via_skops(tmp_path, cls):
    params = {"n_estimators": 5, "max_depth": 3, "n_jobs": 1} if cls is RandomForestModel else {}
    m = cls(**params).fit(X, Y)
    reg = ModelRegistry(tmp_path)
    reg.save("lin", m)
    mv = reg.load("lin")
    assert mv.meta["artifact"] == "model.skops"
    np.testing.assert_allclose(mv.model.predict(X), m.predict(X))


def test_tampered_and_truncated_files_refused(tmp_path, xgb_model):
    reg = ModelRegistry(tmp_path)
    reg.save("m", xgb_model)
    reg.save("m", xgb_model)
    p1 = tmp_path / "m" / "v000001" / "model.ubj"
    os.chmod(p1, 0o644)
    data = bytearray(p1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p1.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="tampered or truncated"):
        reg.load("m", 1)
    p2 = tmp_path / "m" / "v000002" / "model.ubj"
    os.chmod(p2, 0o644)
    p2.write_bytes(p2.read_bytes()[:100])
    with pytest.raises(RegistryError, match="SHA-256"):
        reg.load("m", 2)
    meta = tmp_path / "m" / "v000001" / "meta.json"
    os.chmod(meta, 0o644)
    meta.write_text(meta.read_text().replace('"ubj"', '"json"'))
    with pytest.raises(RegistryError):
        reg.verify("m", 1)


def test_untrusted_skops_type_refused(tmp_path):
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    m = RidgeModel().fit(X, Y)
    reg = ModelRegistry(tmp_path)
    reg.save("r", m)
    vdir = tmp_path / "r" / "v000001"
    art = vdir / "model.skops"
    os.chmod(art, 0o644)
    os.chmod(vdir / "checksums.json", 0o644)

    def plant(obj):  # replace the artifact and even fix up its checksum
        sio.dump(obj, art)
        sums = json.loads((vdir / "checksums.json").read_text())
        sums["model.skops"] = hashlib.sha256(art.read_bytes()).hexdigest()
        (vdir / "checksums.json").write_text(json.dumps(sums))

    plant(make_pipeline(FunctionTransformer(os.getcwd)))
    with pytest.raises(RegistryError, match="trusted list"):
        reg.load("r")
    plant(make_pipeline(FunctionTransformer(np.exp)))
    with pytest.raises(RegistryError, match="expected Ridge"):
        reg.load("r")


def test_feature_mismatch_lists_difference(tmp_path, xgb_model):
    reg = ModelRegistry(tmp_path)
    reg.save("m", xgb_model)
    with pytest.raises(DataError, match=r"missing \['f2'\]; unexpected \['g'\]"):
        reg.load("m", features=["f0", "f1", "g"])
    assert reg.load("m", features=["f0", "f1", "f2"]).version == 1


def test_aliases_audit_rollback_remove(tmp_path, xgb_model):
    reg = ModelRegistry(tmp_path)
    for _ in range(3):
        reg.save("m", xgb_model)
    reg.set_alias("m", "champion", 1)
    reg.set_alias("m", "champion", 2)
    reg.set_alias("m", "champion", 3)
    reg.set_alias("m", "challenger", "latest")
    assert reg.load("m", "champion").version == 3
    assert reg.rollback("m", "champion") == 2
    assert reg.rollback("m", "champion") == 1
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("m", "champion")
    log = reg.audit_log("m")
    assert [(e["action"], e["from"], e["to"]) for e in log if e["alias"] == "champion"] == [
        ("set", None, 1), ("set", 1, 2), ("set", 2, 3), ("rollback", 3, 2), ("rollback", 2, 1)]
    with pytest.raises(RegistryError, match="aliased"):
        reg.remove("m", 1)
    reg.remove("m", 2)
    assert reg.versions("m") == [1, 3]
    assert reg.save("m", xgb_model) == 4  # removed numbers are never reused
    table = reg.list()
    assert table.loc[0, "latest"] == 4 and "champion=1" in table.loc[0, "aliases"]
    assert reg.show("m", "champion")["aliases"] == ["champion"]
    with pytest.raises(RegistryError, match="no alias"):
        reg.load("m", "prod")
    with pytest.raises(ParameterError):
        reg.set_alias("m", "latest", 1)
    with pytest.raises(ParameterError):
        reg.save("../evil", xgb_model)
    reg.remove("m")
    assert reg.versions("m") == []


def _save_many(root: str, n: int, seed: int, out: mp.Queue) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from qilin.ml.models import RidgeModel as R
    from qilin.ml.registry import ModelRegistry as MR

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 3))
    reg = MR(root)
    got = [reg.save("shared", R(alpha=float(seed)).fit(x, x[:, 0]), metrics={"seed": seed})
           for _ in range(n)]
    out.put(got)


def test_concurrent_saves_from_processes_get_distinct_versions(tmp_path):
    import skops.io  # noqa: F401  (imported once here: the forked writers inherit it)

    ctx = mp.get_context("fork")  # real processes; fork skips re-importing qilin
    q = ctx.Queue()
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), 4, s, q)) for s in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    got = sorted(v for r in results for v in r)
    assert got == list(range(1, 17))
    reg = ModelRegistry(tmp_path)
    assert reg.versions("shared") == list(range(1, 17))
    seeds = [reg.load("shared", v).meta["metrics"]["seed"] for v in got]
    assert sorted(seeds) == sorted([0, 1, 2, 3] * 4)
    leftovers = [p.name for p in (tmp_path / "shared").iterdir() if p.name.startswith(".saving")]
    assert leftovers == []
