"""Scores a curve_fit candidate: 1 / (1 + mean squared error) over the points in points.csv."""
import csv
import importlib.util
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def points():
    with open(os.path.join(HERE, "points.csv"), newline="") as fh:
        return [(float(x), float(y)) for x, y in csv.reader(fh)]


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    errors = [(module.f(x) - y) ** 2 for x, y in points()]
    mse = sum(errors) / len(errors)
    if not math.isfinite(mse):
        return {"combined_score": 0.0, "mse": float("inf")}
    return {"combined_score": 1.0 / (1.0 + mse), "mse": mse}
