"""A cheating factor: tomorrow's return, computed from tomorrow's close. It must be rejected
as lookahead (the harness recomputes it on truncated history and the last rows change)."""
import numpy as np


def alpha(panel):
    close = panel["close"]
    factor = np.full(close.shape, np.nan)
    factor[:-1] = close[1:] / close[:-1] - 1.0
    return factor
