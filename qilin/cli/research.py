"""``qilin research``: the end-to-end research job (see :mod:`qilin.research`)."""

from __future__ import annotations

from typing import Any

from qilin.research import ResearchParams, run_research


def main_from_args(args: Any) -> int:
    """``qilin research`` entry point."""
    params = ResearchParams(
        data=args.data or "", market=args.market, n_symbols=args.symbols, n_days=args.days,
        seed=args.seed, factors=args.factors, cluster=args.cluster, n_workers=args.n_workers,
        backend=args.backend, top_k=args.top_k, rebalance=args.rebalance,
        sweep_grid=args.sweep_grid, progress=not args.quiet,
    )
    run_research(params, out_dir=args.out, run_id=args.run_id, verbose=True)
    return 0


def register(subparsers: Any) -> None:
    """Add ``qilin research`` to the CLI."""
    defaults = ResearchParams()
    p = subparsers.add_parser(
        "research", help="the end-to-end research job (what `make run` runs)",
        description="The end-to-end research job on the synthetic market or a bars file.")
    p.add_argument("--data", default="", help="bars file/folder (default: synthetic market)")
    p.add_argument("--market", default=defaults.market, choices=["cn", "us"])
    p.add_argument("--symbols", type=int, default=defaults.n_symbols)
    p.add_argument("--days", type=int, default=defaults.n_days)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--factors", default=defaults.factors,
                   help="alpha158, research or alpha158+research")
    p.add_argument("--cluster", default=defaults.cluster,
                   help="local, threads, cuda, auto, tcp://ADDRESS or a scheduler file")
    p.add_argument("--n-workers", type=int, default=None)
    p.add_argument("--backend", default=defaults.backend, choices=["auto", "cpu", "gpu"])
    p.add_argument("--top-k", type=int, default=defaults.top_k)
    p.add_argument("--rebalance", type=int, default=defaults.rebalance)
    p.add_argument("--sweep-grid", default=defaults.sweep_grid)
    p.add_argument("--out", default="runs", help="parent folder of run folders")
    p.add_argument("--run-id", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=main_from_args)

