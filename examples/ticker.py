"""A stock ticker: random-walk prices, one topic per symbol (the page subscribes to a template).

python examples/ticker.py [--count N]
"""

from __future__ import annotations

import json
import random

from _publisher import run

PRICES = {"ACME": 120.0, "GLOBX": 42.5, "INITECH": 7.25, "UMBRL": 310.0}


def tick(_: int) -> tuple[str, str]:
    symbol = random.choice(list(PRICES))
    PRICES[symbol] = round(max(0.01, PRICES[symbol] * random.uniform(0.98, 1.02)), 2)
    body = {"symbol": symbol, "price": PRICES[symbol]}
    return f"https://example.com/stocks/{symbol}", json.dumps(body)


if __name__ == "__main__":
    run(tick, 0.2, "stock prices")
