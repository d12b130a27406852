"""ModelRegistry: immutable, checksummed model versions in safe formats, with aliases.

Layout under ``root``::

    <name>/
      v000001/              one immutable version (appears whole: temp folder + rename)
        model.ubj           XGBoost's native UBJSON (or model.skops for scikit-learn)
        meta.json           kind, params, features, processors, metrics, data fingerprint,
                            library versions, git commit, created time
        checksums.json      SHA-256 of every other file, verified at load
      aliases.json          {"champion": 3, "challenger": 4}
      audit.jsonl           one line per alias move (time, alias, from, to, action, user)
      .lock                 advisory lock for alias updates

No pickle anywhere: XGBoost models are stored with ``Booster.save_model`` (UBJ or JSON) and
scikit-learn models with :mod:`skops.io`, loaded with an explicit trusted-type list. A file
whose SHA-256 differs from the one recorded at save (tampered or truncated) is refused.
Concurrent saves of the same name (threads or processes) each get their own version: a
version folder is claimed by an atomic ``rename``, which fails if another writer got there
first, and the writer then tries the next number.

Examples
--------
>>> import tempfile, numpy as np
>>> from qilin.ml.models import RidgeModel
>>> X = np.random.default_rng(0).normal(size=(30, 2))
>>> m = RidgeModel().fit(X, X[:, 0])
>>> reg = ModelRegistry(tempfile.mkdtemp())
>>> reg.save("demo", m, metrics={"rank_ic": 0.05})
1
>>> reg.set_alias("demo", "champion", 1)
>>> mv = reg.load("demo", "champion")
>>> mv.version, mv.meta["kind"], mv.model.features_
(1, 'ridge', ['f0', 'f1'])
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import getpass
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qilin.atomic import json_safe, write_json_atomic
from qilin.errors import DataError, ParameterError
from qilin.ml.dataset import feature_difference
from qilin.ml.models import MODELS, Model, XGBoostModel, _SklearnModel
from qilin.ml.processors import ProcessorChain

#: Types skops may load beyond its own defaults (scikit-learn estimators are trusted there).
#: Anything else found in a ``.skops`` file is refused.
TRUSTED_SKOPS_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^v(\d{6})$")
_TOMBSTONE = re.compile(r"^v(\d{6})\.removed$")
_REGISTRY_PACKAGES = ("numpy", "pandas", "scikit-learn", "xgboost", "skops", "qilin")


class RegistryError(DataError):
    """A registry entry is missing, corrupt or inconsistent (subclass of DataError)."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ParameterError(f"{kind} {value!r} must be 1-100 letters, digits, '_', '.' or '-' "
                             "(not starting with '.' or '-')")
    return value


def _versions_of_packages() -> dict[str, str]:
    from qilin.info import package_version

    return {p: package_version(p) for p in _REGISTRY_PACKAGES}


@dataclass
class ModelVersion:
    """A loaded version: the fitted model, its ``meta.json`` and where it lives."""

    name: str
    version: int
    model: Model
    meta: dict[str, Any]
    path: Path

    @property
    def features(self) -> list[str]:
        """The features the model was trained on (after the processors)."""
        return list(self.meta["features"])

    def processors(self) -> ProcessorChain | None:
        """The fitted processors saved with the model (None when none were saved)."""
        state = self.meta.get("processors") or {}
        return ProcessorChain.from_dict(state) if "input_features" in state else None

    def reference(self) -> pd.DataFrame | None:
        """The saved training reference sample (None when none was saved); its checksum was
        verified at load."""
        path = self.path / "reference.parquet"
        return pd.read_parquet(path) if path.exists() else None


class ModelRegistry:
    """A folder of named models with immutable numbered versions and movable aliases.

    Parameters
    ----------
    root : path
        The registry folder (created when missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def _dir(self, name: str) -> Path:
        return self.root / _check_name("model name", name)

    def versions(self, name: str) -> list[int]:
        """Version numbers of ``name``, ascending (empty when unknown)."""
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _VERSION.match(p.name)))

    def list(self) -> pd.DataFrame:
        """One row per model: latest version, number of versions, aliases, kind, created."""
        rows = []
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)):
            vs = self.versions(d.name)
            if not vs:
                continue
            meta = self._read_meta(d.name, vs[-1])
            rows.append({"name": d.name, "latest": vs[-1], "versions": len(vs),
                         "aliases": ",".join(f"{a}={v}" for a, v in
                                             sorted(self.aliases(d.name).items())),
                         "kind": meta.get("kind"), "created": meta.get("created")})
        return pd.DataFrame(rows, columns=["name", "latest", "versions", "aliases", "kind",
                                           "created"])

    # ------------------------------------------------------------------ save
    def save(
        self,
        name: str,
        model: Model,
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        features: Sequence[str] | None = None,
        processors: ProcessorChain | dict[str, Any] | None = None,
        data_fingerprint: str | None = None,
        fmt: str = "ubj",
        extra: dict[str, Any] | None = None,
        reference: pd.DataFrame | None = None,
    ) -> int:
        """Store a fitted model as the next version of ``name``; returns the version number.

        Parameters
        ----------
        fmt : {"ubj", "json"}
            XGBoost's file format (scikit-learn models always use skops).
        params : dict, optional
            Extra parameters to record (the model's own ``get_params()`` always are).
        processors : ProcessorChain or dict, optional
            The fitted processors (``split.processors``): stored with their statistics so
            that :meth:`ModelVersion.processors` reapplies them to new data.
        reference : DataFrame, optional
            A sample of the training features (and a ``prediction`` column) kept as
            ``reference.parquet`` for drift checks (at most 20,000 rows are kept).
        """
        if not isinstance(model, Model):
            raise ParameterError(f"model must be a qilin.ml Model, got {type(model).__name__}")
        if model.features_ is None:
            raise ParameterError(f"{type(model).__name__} is not fitted: fit it before saving")
        feats = list(features) if features is not None else list(model.features_)
        if feats != list(model.features_):
            raise DataError(f"features given to save differ from the model's: "
                            f"{feature_difference(model.features_, feats)}")
        if isinstance(processors, ProcessorChain):
            processors = processors.to_dict()
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=d, prefix=".saving-", suffix=".tmp"))
        try:
            artifact = self._write_artifact(model, tmp, fmt)
            if reference is not None:
                ref = reference if len(reference) <= 20_000 else reference.sample(
                    20_000, random_state=0).sort_index()
                ref.reset_index(drop=True).to_parquet(tmp / "reference.parquet", index=False)
            meta = {
                "name": name, "kind": model.kind, "artifact": artifact,
                "params": model.get_params(), "extra_params": params or {},
                "features": feats, "processors": processors or {},
                "metrics": metrics or {}, "data_fingerprint": data_fingerprint,
                "best_iteration": getattr(model, "best_iteration_", None),
                "versions": _versions_of_packages(), "git_commit": _git_commit(),
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "extra": extra or {},
            }
            (tmp / "meta.json").write_text(json.dumps(json_safe(meta), indent=2,
                                                      allow_nan=False) + "\n")
            sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            (tmp / "checksums.json").write_text(json.dumps(sums, indent=2) + "\n")
            for p in tmp.iterdir():
                os.chmod(p, 0o444)
            return self._claim(d, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _claim(self, d: Path, tmp: Path) -> int:
        """Rename ``tmp`` to the next free ``vNNNNNN``; retry when another writer won."""
        os.chmod(tmp, 0o755)
        for _ in range(10_000):
            used = [int(m.group(1)) for p in d.iterdir()
                    if (m := _VERSION.match(p.name) or _TOMBSTONE.match(p.name))]
            n = max(used, default=0) + 1  # removed numbers are never reused
            try:
                os.rename(tmp, d / f"v{n:06d}")  # fails if that version exists (non-empty)
                return n
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        raise RegistryError(f"could not claim a version folder under {d}")

    @staticmethod
    def _write_artifact(model: Model, tmp: Path, fmt: str) -> str:
        if isinstance(model, XGBoostModel):
            if fmt not in ("ubj", "json"):
                raise ParameterError(f"fmt must be 'ubj' or 'json', got {fmt!r}")
            path = tmp / f"model.{fmt}"
            model.booster_.save_model(str(path))
            return path.name
        if isinstance(model, _SklearnModel):
            import skops.io as sio

            est = model.estimator_
            if not type(est).__module__.startswith("sklearn."):
                raise ParameterError(f"{type(est).__name__} ({type(est).__module__}) cannot be "
                                     "stored safely; train the CPU (scikit-learn) variant")
            path = tmp / "model.skops"
            sio.dump(est, path)
            return path.name
        raise ParameterError(f"no safe format for {type(model).__name__}")

    # ------------------------------------------------------------------ load
    def resolve(self, name: str, version: int | str = "latest") -> int:
        """A version number for ``latest``, a number (or ``"3"``/``"v3"``) or an alias."""
        vs = self.versions(name)
        if not vs:
            raise RegistryError(f"no model named {name!r} in {self.root}")
        if version == "latest":
            return vs[-1]
        if isinstance(version, str) and re.fullmatch(r"v?\d+", version):
            version = int(version.lstrip("v"))
        if isinstance(version, str):
            aliases = self.aliases(name)
            if version not in aliases:
                raise RegistryError(f"model {name!r} has no alias {version!r}; aliases: "
                                    f"{sorted(aliases) or 'none'}")
            version = aliases[version]
        if isinstance(version, bool) or version not in vs:
            raise RegistryError(f"model {name!r} has no version {version!r}; versions: {vs}")
        return int(version)

    def _vdir(self, name: str, version: int) -> Path:
        return self._dir(name) / f"v{version:06d}"

    def _read_meta(self, name: str, version: int) -> dict[str, Any]:
        path = self._vdir(name, version) / "meta.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None

    def verify(self, name: str, version: int | str = "latest") -> dict[str, str]:
        """Check every file's SHA-256 against ``checksums.json``; returns the checksums.

        Raises
        ------
        RegistryError
            Naming the first file that is missing, changed or truncated.
        """
        v = self.resolve(name, version)
        vdir = self._vdir(name, v)
        try:
            sums = json.loads((vdir / "checksums.json").read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{vdir}/checksums.json is unreadable ({exc}); the version is "
                                "corrupt") from None
        present = {p.name for p in vdir.iterdir()} - {"checksums.json"}
        if present != set(sums):
            raise RegistryError(f"{vdir}: files {sorted(present ^ set(sums))} do not match the "
                                "recorded list; the version was altered")
        for fname, expected in sums.items():
            got = sha256_file(vdir / fname)
            if got != expected:
                raise RegistryError(f"{vdir / fname}: SHA-256 {got[:12]}... differs from the "
                                    f"{expected[:12]}... recorded at save (tampered or "
                                    "truncated); refusing to load it")
        return sums

    def load(self, name: str, version: int | str = "latest",
             features: Sequence[str] | None = None) -> ModelVersion:
        """Load a version (``"latest"``, a number or an alias), verifying its checksums.

        ``features``: the columns of the data it will score; a difference from the model's
        feature list raises a :class:`DataError` naming it.
        """
        v = self.resolve(name, version)
        self.verify(name, v)
        meta = self._read_meta(name, v)
        if features is not None and list(features) != list(meta["features"]):
            raise DataError(f"model {name!r} v{v} was trained on other features: "
                            f"{feature_difference(meta['features'], list(features))}")
        kind = meta.get("kind")
        if kind not in MODELS:
            raise RegistryError(f"model {name!r} v{v} has unknown kind {kind!r}")
        model = MODELS[kind](**{k: val for k, val in meta["params"].items()
                                if k != "backend"}, backend="cpu")
        path = self._vdir(name, v) / meta["artifact"]
        if isinstance(model, XGBoostModel):
            import xgboost as xgb

            booster = xgb.Booster()
            try:
                booster.load_model(str(path))
            except xgb.core.XGBoostError as exc:
                raise RegistryError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
            model.booster_ = booster
            model.best_iteration_ = meta.get("best_iteration")
            if model.best_iteration_ is None:
                model.best_iteration_ = booster.num_boosted_rounds() - 1
        else:
            import skops.io as sio

            untrusted = set(sio.get_untrusted_types(file=path)) - set(TRUSTED_SKOPS_TYPES)
            if untrusted:
                raise RegistryError(f"{path} holds types outside the trusted list: "
                                    f"{sorted(untrusted)}; refusing to load it")
            est = sio.load(path, trusted=list(TRUSTED_SKOPS_TYPES))
            expected = type(model._make())
            if type(est) is not expected:
                raise RegistryError(f"{path} holds a {type(est).__name__}, expected "
                                    f"{expected.__name__}; refusing to use it")
            model.estimator_ = est
        model.features_ = list(meta["features"])
        return ModelVersion(name, v, model, meta, self._vdir(name, v))

    def show(self, name: str, version: int | str = "latest") -> dict[str, Any]:
        """``meta.json`` of a version plus its version number, aliases and checksums."""
        v = self.resolve(name, version)
        meta = self._read_meta(name, v)
        meta["version"] = v
        meta["aliases"] = sorted(a for a, x in self.aliases(name).items() if x == v)
        meta["checksums"] = json.loads((self._vdir(name, v) / "checksums.json").read_text())
        return meta

    # ------------------------------------------------------------------ aliases
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of a model."""
        path = self._dir(name) / "aliases.json"
        if not path.exists():
            return {}
        try:
            return {k: int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None

    def audit_log(self, name: str) -> list[dict[str, Any]]:
        """Every alias move of ``name``, oldest first."""
        path = self._dir(name) / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _move(self, name: str, alias: str, to: int | None, action: str) -> None:
        with self._locked(name) as d:
            cur = self.aliases(name)
            before = cur.get(alias)
            if to is None:
                cur.pop(alias, None)
            else:
                cur[alias] = to
            write_json_atomic(d / "aliases.json", dict(sorted(cur.items())))
            entry = {"time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
                     "alias": alias, "from": before, "to": to, "action": action,
                     "user": _user()}
            with open(d / "audit.jsonl", "a") as fh:
                fh.write(json.dumps(entry) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point ``alias`` (e.g. ``champion``, ``challenger``) at a version; logged."""
        _check_name("alias", alias)
        if alias == "latest" or re.fullmatch(r"v?\d+", alias):
            raise ParameterError(f"alias {alias!r} is reserved (latest / version numbers)")
        self._move(name, alias, self.resolve(name, version), "set")

    def rollback(self, name: str, alias: str) -> int:
        """Move ``alias`` back to the version it pointed at before its last move."""
        cur = self.aliases(name).get(alias)
        if cur is None:
            raise RegistryError(f"model {name!r} has no alias {alias!r} to roll back")
        stack: list[int] = []  # replay the log: a set pushes, a rollback pops
        for e in self.audit_log(name):
            if e["alias"] != alias:
                continue
            if e["action"] == "set":
                stack.append(int(e["to"]))
            elif e["action"] == "rollback" and stack:
                stack.pop()
        live = set(self.versions(name))
        while stack and stack[-1] == cur:
            stack.pop()
        while stack and stack[-1] not in live:
            stack.pop()
        if not stack:
            raise RegistryError(f"alias {alias!r} of {name!r} has no earlier version to roll "
                                "back to")
        self._move(name, alias, stack[-1], "rollback")
        return stack[-1]

    def remove(self, name: str, version: int | str | None = None) -> None:
        """Remove one version (refused while an alias points at it) or, with no version,
        the whole model."""
        d = self._dir(name)
        if version is None:
            if not d.exists():
                raise RegistryError(f"no model named {name!r} in {self.root}")
            trash = d.with_name(f".{name}.removing")
            os.replace(d, trash)
            shutil.rmtree(trash, ignore_errors=True)
            return
        v = self.resolve(name, version)
        held = sorted(a for a, x in self.aliases(name).items() if x == v)
        if held:
            raise RegistryError(f"version {v} of {name!r} is aliased as {held}; move the "
                                "alias first")
        vdir = self._vdir(name, v)
        (d / f"v{v:06d}.removed").touch()  # tombstone: the number is never reused
        trash = d / f".v{v:06d}.removing"
        os.replace(vdir, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _git_commit() -> str | None:
    from qilin.info import git_commit

    return git_commit()
