"""``qilin model``: train, predict, inspect, alias and watch models (see :mod:`qilin.ml`).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["model", "train", "--factors", "f.parquet", "--data", "b.parquet",
...                           "--registry", "reg", "--name", "m", "--param", "max_depth=4"])
>>> args.model_command, args.model, parse_params(args.param)
('train', 'xgboost', {'max_depth': 4})
>>> parse_walk_forward("train=250,test=60,valid=40,mode=expanding")["mode"]
'expanding'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from qilin.cli.common import cluster_client, load_data
from qilin.errors import ParameterError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict; values parsed as JSON when possible (``4`` -> int)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--param {item!r} must be written name=value")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


_WF_KEYS = {"train": int, "test": int, "valid": int, "step": int, "purge": int,
            "embargo": int, "mode": str}


def parse_walk_forward(text: str) -> dict[str, Any]:
    """``"train=250,test=60[,valid=40,step=60,purge=5,embargo=0,mode=rolling]"``."""
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in _WF_KEYS:
            raise ParameterError(f"--walk-forward item {item!r}: use key=value with keys "
                                 f"{', '.join(_WF_KEYS)}")
        try:
            out[key] = _WF_KEYS[key](value)
        except ValueError:
            raise ParameterError(f"--walk-forward {key}={value!r} must be an integer") from None
    if "train" not in out or "test" not in out:
        raise ParameterError("--walk-forward needs at least train=N and test=N (dates)")
    return out


def _span(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise ParameterError(f"segment {text!r} must be START:END (dates, inclusive)")
    return (a, b)


def _dataset(args: argparse.Namespace) -> Any:
    from qilin.ml.dataset import Dataset

    bars = load_data(args.data, args.validate)
    norm = None if args.label_norm == "none" else args.label_norm
    return Dataset(args.factors, bars, label=args.label, horizon=args.horizon, lag=args.lag,
                   label_norm=norm)


def _default_segments(ds: Any) -> dict[str, tuple[int, int]]:
    """60 / 20 / 20 % of the dates, with purge gaps of the label span."""
    n, g = len(ds.dates), ds.shift
    a = int(n * 0.6)
    b = int(n * 0.8)
    segs = {"train": (0, a - 1), "valid": (a + g, b - 1), "test": (b + g, n - 1)}
    if segs["test"][0] > segs["test"][1] or segs["valid"][0] > segs["valid"][1]:
        raise ParameterError(f"{n} dates are too few for train/valid/test; give --train etc.")
    return segs


def _scores_long(scores: Any) -> pd.DataFrame:
    df = scores.to_long(["score"], dropna=True)
    return df[np.isfinite(df["score"].to_numpy())].reset_index(drop=True)


def _write_scores(scores: Any, path: str) -> None:
    from qilin.atomic import atomic_path

    with atomic_path(path, keep_suffix=True) as tmp:
        _scores_long(scores).to_parquet(tmp, index=False)
    _say(f"scores written to {path}")


def _metric_line(m: dict[str, Any]) -> str:
    return (f"IC {m['ic']:.4f}, Rank IC {m['rank_ic']:.4f} (t {m['rank_ic_t']:.2f}, "
            f"{int(m['n_dates'])} dates)")


def _reference(split_train: Any, model: Any) -> pd.DataFrame:
    ref = pd.DataFrame(split_train.X, columns=split_train.features)
    ref["prediction"] = model.predict(split_train)
    return ref


def _train(args: argparse.Namespace) -> int:
    from qilin.ml.models import make_model
    from qilin.ml.registry import ModelRegistry
    from qilin.ml.scores import summary
    from qilin.ml.walk_forward import walk_forward
    from qilin.ml.windows import walk_forward_windows

    t0 = time.perf_counter()
    registry = ModelRegistry(args.registry)
    params = parse_params(args.param)
    model = make_model(args.model, backend=args.backend, seed=args.seed, **params)
    _say(f"[1/3] loading {args.data} and {args.factors}")
    ds = _dataset(args)
    _say(f"      {ds!r}")
    with cluster_client(args.cluster) as client:
        if args.walk_forward:
            wf = parse_walk_forward(args.walk_forward)
            wf.setdefault("purge", ds.shift)
            windows = walk_forward_windows(len(ds.dates), **wf)
            _say(f"[2/3] walk-forward: {len(windows)} windows"
                 + (" on the cluster" if client is not None else ""))
            res = walk_forward(model, ds, windows, client=client, seed=args.seed,
                               keep_models=True)
            print(res.windows[["test_start", "test_end", "rows_train", "rank_ic",
                               "rank_ic_t"]].to_string())
            final, procs = res.models[-1], res.processors[-1]
            metrics = {"walk_forward": res.metrics, "windows": len(windows)}
            last = windows[-1]
            split = ds.split(**last.segments())
            reference = _reference(split.train, final)
            print(f"out-of-sample (stitched): {_metric_line(res.metrics)}")
            if args.scores_out:
                _write_scores(res.scores, args.scores_out)
        else:
            segs = ({"train": _span(args.train), "valid": _span(args.valid),
                     "test": _span(args.test)} if args.train else _default_segments(ds))
            segs = {k: v for k, v in segs.items() if v is not None}
            split = ds.split(**segs)
            dropped = split.processors.dropped
            _say(f"[2/3] training {args.model} on {len(split.train):,} rows "
                 f"({len(split.features)} features"
                 + (f", dropped {sorted(dropped)}" if dropped else "") + ")"
                 + (" via xgboost.dask" if client is not None and args.model == "xgboost"
                    else ""))
            fit_kw: dict[str, Any] = {"valid": split.valid}
            if client is not None and args.model == "xgboost":
                fit_kw["client"] = client
            model.fit(split.train, **fit_kw)
            final, procs = model, split.processors
            metrics = {}
            if split.test is not None:
                scores, m = ds.evaluate(split.test, model.predict(split.test))
                metrics["test"] = summary(m)
                print(f"test {split.segments['test']}: {_metric_line(m)}")
                if args.scores_out:
                    _write_scores(scores, args.scores_out)
            reference = _reference(split.train, model)
    version = registry.save(
        args.name, final, metrics=metrics, processors=procs,
        data_fingerprint=ds.fingerprint(), reference=reference,
        extra={"label": ds.label_expr, "horizon": ds.horizon, "lag": ds.lag,
               "label_norm": ds.label_norm, "factors": str(args.factors),
               "data": str(args.data)})
    if args.alias:
        registry.set_alias(args.name, args.alias, version)
    print(f"[3/3] saved {args.name} v{version} in {args.registry}"
          + (f" (alias {args.alias})" if args.alias else "")
          + f" in {time.perf_counter() - t0:.1f}s")
    return 0


def _new_segment(args: argparse.Namespace, mv: Any) -> tuple[Any, Any]:
    from qilin.errors import DataError
    from qilin.ml.dataset import Dataset

    chain = mv.processors()
    if chain is None:
        raise DataError(f"model {mv.name} v{mv.version} has no saved processors")
    extra = mv.meta.get("extra", {})
    bars = load_data(args.data, args.validate)
    ds = Dataset(args.factors, bars, label=extra.get("label"),
                 horizon=int(extra.get("horizon", 1)), lag=int(extra.get("lag", 0)),
                 label_norm=extra.get("label_norm"), leak_threshold=None)
    seg = ds.apply(chain, getattr(args, "start", None), getattr(args, "end", None))
    return ds, seg


def _predict(args: argparse.Namespace) -> int:
    from qilin.ml.registry import ModelRegistry

    mv = ModelRegistry(args.registry).load(args.name, args.version)
    ds, seg = _new_segment(args, mv)
    t0 = time.perf_counter()
    pred = mv.model.predict(seg)
    dt = time.perf_counter() - t0
    scores, m = ds.evaluate(seg, pred)
    _write_scores(scores, args.out)
    print(f"{args.name} v{mv.version}: {len(seg):,} rows scored in {dt:.3f}s "
          f"({len(seg) / max(dt, 1e-9):,.0f} rows/s)")
    if np.isfinite(m["rank_ic"]):
        print(f"where labels are known: {_metric_line(m)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from qilin.ml.registry import ModelRegistry

    table = ModelRegistry(args.registry).list()
    print(table.to_string(index=False) if len(table) else "(no models)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from qilin.ml.registry import ModelRegistry

    reg = ModelRegistry(args.registry)
    meta = reg.show(args.name, args.version)
    if args.json:
        print(json.dumps(meta, indent=2, default=str))
        return 0
    for key in ("name", "version", "aliases", "kind", "created", "git_commit",
                "data_fingerprint", "params", "metrics", "versions"):
        print(f"{key}: {meta.get(key)}")
    print(f"features ({len(meta['features'])}): {', '.join(meta['features'][:20])}"
          + (" ..." if len(meta["features"]) > 20 else ""))
    dropped = (meta.get("processors") or {}).get("dropped") or {}
    if dropped:
        print(f"dropped in training: {dropped}")
    return 0


def _alias(args: argparse.Namespace) -> int:
    from qilin.ml.registry import ModelRegistry

    reg = ModelRegistry(args.registry)
    reg.set_alias(args.name, args.alias, args.version)
    print(f"{args.name}: {args.alias} -> v{reg.aliases(args.name)[args.alias]}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from qilin.ml.registry import ModelRegistry

    v = ModelRegistry(args.registry).rollback(args.name, args.alias)
    print(f"{args.name}: {args.alias} rolled back to v{v}")
    return 0


def _drift(args: argparse.Namespace) -> int:
    from qilin.errors import DataError
    from qilin.ml.drift import DriftMonitor, DriftThresholds
    from qilin.ml.registry import ModelRegistry

    mv = ModelRegistry(args.registry).load(args.name, args.version)
    ref = mv.reference()
    if ref is None:
        raise DataError(f"model {args.name} v{mv.version} has no reference sample; retrain "
                        "with `qilin model train` to record one")
    ds, seg = _new_segment(args, mv)
    pred = mv.model.predict(seg)
    feats = mv.features
    th = DriftThresholds(psi_warn=args.psi_warn, psi_alert=args.psi_alert,
                         share_warn=min(args.share_alert, 0.1), share_alert=args.share_alert)
    mon = DriftMonitor(ref[feats], feats, ref.get("prediction"), model=args.name,
                       thresholds=th)
    lo, hi = seg.rows
    rep = mon.check(pd.DataFrame(seg.X, columns=feats), predictions=pred,
                    scores=seg.to_grid(pred), forward=ds.forward_return[lo:hi + 1])
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2, default=str))
    else:
        print(rep.table.round(4).to_string())
        print(f"flag: {rep.flag} ({rep.share:.0%} of features drift); prediction PSI "
              f"{rep.prediction_psi:.4f}; live Rank IC {rep.live_rank_ic:.4f}")
    return 1 if rep.flag == "alert" and args.fail_on_alert else 0


def _add_common(p: argparse.ArgumentParser, registry_only: bool = False) -> None:
    p.add_argument("--registry", required=True, help="model registry folder")
    if registry_only:
        return
    p.add_argument("--name", required=True, help="model name")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--factors", required=True, help="factor Parquet (date, symbol, features)")
    p.add_argument("--data", required=True, help="bars file or folder")
    p.add_argument("--validate", default="raise", choices=["raise", "drop", "repair", "none"],
                   help="validation policy for the bars")


def register(subparsers: Any) -> None:
    """Add ``qilin model`` and its sub-commands to the CLI."""
    top = subparsers.add_parser("model", help="train / predict / registry / drift of models")
    sub = top.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    tr = sub.add_parser("train", help="train a model on factors and register it")
    _add_data(tr)
    _add_common(tr)
    tr.add_argument("--label", default=None,
                    help="label expression known at t+lag+horizon (default: h-day return)")
    tr.add_argument("--horizon", type=int, default=1)
    tr.add_argument("--lag", type=int, default=0)
    tr.add_argument("--label-norm", default="zscore", choices=["rank", "zscore", "none"])
    tr.add_argument("--model", default="xgboost", choices=["xgboost", "ridge", "random_forest"])
    tr.add_argument("--param", action="append", help="model parameter name=value (repeat)")
    tr.add_argument("--train", default=None, help="START:END (default: first 60%% of dates)")
    tr.add_argument("--valid", default=None, help="START:END")
    tr.add_argument("--test", default=None, help="START:END")
    tr.add_argument("--walk-forward", default=None,
                    help="train=N,test=N[,valid=N,step=N,purge=N,embargo=N,mode=rolling]")
    tr.add_argument("--cluster", default=None, help="local, threads, cuda or tcp://ADDRESS")
    tr.add_argument("--backend", default="cpu", choices=["cpu", "gpu", "auto"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--alias", default=None, help="point this alias at the new version")
    tr.add_argument("--scores-out", default=None, help="write out-of-sample scores (Parquet)")
    tr.set_defaults(func=_train)

    pr = sub.add_parser("predict", help="score new data with a registered model")
    _add_data(pr)
    _add_common(pr)
    pr.add_argument("--version", default="latest", help="number, alias or latest")
    pr.add_argument("--start", default=None)
    pr.add_argument("--end", default=None)
    pr.add_argument("--out", required=True, help="scores Parquet (date, symbol, score)")
    pr.set_defaults(func=_predict)

    ls = sub.add_parser("list", help="registered models")
    _add_common(ls, registry_only=True)
    ls.set_defaults(func=_list)

    sh = sub.add_parser("show", help="meta.json of a version")
    _add_common(sh)
    sh.add_argument("--version", default="latest")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)

    al = sub.add_parser("alias", help="point an alias (champion, challenger) at a version")
    _add_common(al)
    al.add_argument("alias")
    al.add_argument("version")
    al.set_defaults(func=_alias)

    rb = sub.add_parser("rollback", help="move an alias back to its previous version")
    _add_common(rb)
    rb.add_argument("alias")
    rb.set_defaults(func=_rollback)

    dr = sub.add_parser("drift", help="feature / prediction drift of new data vs training")
    _add_data(dr)
    _add_common(dr)
    dr.add_argument("--version", default="latest")
    dr.add_argument("--start", default=None)
    dr.add_argument("--end", default=None)
    dr.add_argument("--psi-warn", type=float, default=0.1)
    dr.add_argument("--psi-alert", type=float, default=0.2)
    dr.add_argument("--share-alert", type=float, default=0.25)
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--fail-on-alert", action="store_true", help="exit 1 when flagged")
    dr.set_defaults(func=_drift)


__all__ = ["parse_params", "parse_walk_forward", "register"]
