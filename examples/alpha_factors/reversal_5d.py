"""5-day short-term reversal: minus the return over the last 5 trading days (Lehmann, 1990;
Jegadeesh, 1990: last week's losers tend to outperform last week's winners)."""
import numpy as np

LOOKBACK = 5


def alpha(panel):
    close = panel["close"]
    factor = np.full(close.shape, np.nan)
    factor[LOOKBACK:] = -(close[LOOKBACK:] / close[:-LOOKBACK] - 1.0)
    return factor
