"""Trading costs: commission (with a minimum per order), slippage in bps, stamp duty on sells.

A :class:`CostModel` is built from a market profile (:func:`qilin.config.load_market`) and
can be overridden field by field. Fill prices move against the trader by the slippage;
commission and stamp duty are charged on the notional at the fill price and paid from cash.
The kernels apply the same rules through the order primitives of :mod:`qilin.kernels.orders`
(sizing, buys within cash and lots, sells, rejections).

Examples
--------
>>> cm = CostModel(commission_rate=0.0003, min_commission=5.0, slippage_bps=10.0,
...                stamp_duty_rate=0.0005)
>>> round(cm.fill_price(10.0, buy=True), 4), round(cm.fill_price(10.0, buy=False), 4)
(10.01, 9.99)
>>> cm.commission(1000.0), round(cm.commission(100000.0), 6)
(5.0, 30.0)
>>> round(cm.sell_cost(100000.0), 6)
80.0
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from qilin.config import MarketConfig, load_market
from qilin.errors import BacktestError


@dataclass(frozen=True)
class CostModel:
    """Per-order trading costs.

    Parameters
    ----------
    commission_rate : float
        Fraction of the traded notional charged on every order (buys and sells).
    min_commission : float
        Minimum commission per order (in the account currency); 0 disables it.
    slippage_bps : float
        Buys fill at ``p * (1 + s)``, sells at ``p * (1 - s)`` with ``s = slippage_bps / 1e4``.
    stamp_duty_rate : float
        Fraction of the notional charged on sells only.
    """

    commission_rate: float = 0.0
    min_commission: float = 0.0
    slippage_bps: float = 0.0
    stamp_duty_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("commission_rate", "min_commission", "slippage_bps", "stamp_duty_rate"):
            value = getattr(self, name)
            if not value >= 0:
                raise BacktestError(f"cost parameter {name}={value!r} must be >= 0")
        if self.slippage_bps >= 1e4:
            raise BacktestError(f"slippage_bps={self.slippage_bps} must be below 10000")

    @classmethod
    def from_market(cls, market: MarketConfig | str, **overrides: Any) -> CostModel:
        """Costs of a market profile (``"cn"``, ``"us"`` or a MarketConfig), with overrides."""
        m = load_market(market) if isinstance(market, str) else market
        base = cls(m.commission_rate, m.min_commission, m.slippage_bps, m.stamp_duty_rate)
        return replace(base, **overrides) if overrides else base

    @property
    def slippage(self) -> float:
        """Slippage as a fraction (``slippage_bps / 1e4``)."""
        return self.slippage_bps / 1e4

    def fill_price(self, price: float, buy: bool) -> float:
        """Execution price after slippage for a buy or a sell at reference ``price``."""
        return price * (1.0 + self.slippage) if buy else price * (1.0 - self.slippage)

    def commission(self, notional: float) -> float:
        """``max(commission_rate * notional, min_commission)`` for a non-empty order."""
        if notional <= 0:
            return 0.0
        return max(self.commission_rate * notional, self.min_commission)

    def buy_cost(self, notional: float) -> float:
        """Costs paid on a buy of ``notional`` (commission only)."""
        return self.commission(notional)

    def sell_cost(self, notional: float) -> float:
        """Costs paid on a sell of ``notional`` (commission plus stamp duty)."""
        return self.commission(notional) + self.stamp_duty_rate * notional if notional > 0 else 0.0
