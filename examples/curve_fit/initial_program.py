"""Curve fitting, in OpenEvolve's layout: evolve f so that it matches the points in points.csv.

The evaluator scores 1 / (1 + mean squared error); only the code between the EVOLVE-BLOCK
markers changes.
"""


# EVOLVE-BLOCK-START
def f(x):
    a, b, c = 1.0, 0.0, 0.0
    return a * x * x + b * x + c
# EVOLVE-BLOCK-END
