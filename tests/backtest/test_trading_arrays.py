"""rules.trading_arrays: the one place where a Panel and market rules become kernel inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from realdata import load_subset

from qilin.backtest.rules import MarketRules, limit_hits, trading_arrays
from qilin.data.panel import Panel
from qilin.kernels import orders


def test_codes_on_a_hand_case():
    close = np.array([[10.0], [11.0], [11.0], [10.5], [np.nan], [9.45], [9.5]])
    volume = np.array([[5.0], [5.0], [0.0], [5.0], [np.nan], [5.0], [5.0]])
    p = Panel.from_arrays({"close": close, "volume": volume},
                          pd.date_range("2021-01-04", periods=7), ["600000.SH"])
    a = trading_arrays(p, MarketRules.from_market("cn"))
    ok, up, down = 0, orders.REJECT_LIMIT_UP, orders.REJECT_LIMIT_DOWN
    no_vol, halt = orders.REJECT_NO_VOLUME, orders.REJECT_SUSPENDED
    # day 1 closes +10% (limit up), day 2 has no volume (and sits at the limit: no_volume
    # wins), day 4 is missing, day 5 closes -10% from day 3 (limit down)
    assert a.buy_reject[:, 0].tolist() == [ok, up, no_vol, ok, halt, ok, ok]
    assert a.sell_reject[:, 0].tolist() == [ok, ok, no_vol, ok, halt, down, ok]
    assert a.buy_reject.dtype == np.int8 and a.sell_reject.dtype == np.int8
    assert a.price[2, 0] == 11.0 and np.isnan(a.price[4, 0])  # priced, not tradable
    assert all(orders.halted_nb(c) for c in (no_vol, halt))
    assert not any(orders.halted_nb(c) for c in (ok, up, down))
    # without price limits or zero-volume blocking only the missing bar is closed
    loose = trading_arrays(p, MarketRules(price_limits=False, block_zero_volume=False))
    assert loose.buy_reject[:, 0].tolist() == [ok, ok, ok, ok, halt, ok, ok]


def test_codes_agree_with_the_limit_hits_on_real_a_shares(ashare_path):
    panel = load_subset(ashare_path, ["000001.SZ", "300014.SZ", "688005.SH", "600289.SH"],
                        "2019-01-01", "2020-12-31")
    rules = MarketRules.from_market("cn")
    a = trading_arrays(panel, rules, "close")
    up_hit, down_hit = limit_hits(panel, rules)
    priced = np.isfinite(a.price) & (a.price > 0)
    trades = priced & (a.buy_reject != orders.REJECT_NO_VOLUME)
    assert ((a.buy_reject == orders.REJECT_LIMIT_UP) == (trades & up_hit)).all()
    assert ((a.sell_reject == orders.REJECT_LIMIT_DOWN) == (trades & down_hit)).all()
    assert (a.buy_reject == orders.REJECT_LIMIT_UP).sum() > 5
    assert (a.sell_reject == orders.REJECT_LIMIT_DOWN).sum() > 5
    assert ((a.buy_reject == orders.REJECT_SUSPENDED) == ~priced).all()
