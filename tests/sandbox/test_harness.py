"""The wire format: strict conversion of candidate outputs to plain data and back."""
import json
import math

import numpy as np
import pytest

from evoforge.sandbox import harness
from evoforge.sandbox.harness import OutputError, decode_outputs, encode_outputs


def roundtrip(values):
    blob = json.dumps(encode_outputs(values))
    return decode_outputs(json.loads(blob))


def test_plain_values_roundtrip():
    values = [1, -2**70, 2.5, True, None, "x", [1, (2, 3)], {"a": {"b": [None]}}]
    assert roundtrip(values) == [1, -2**70, 2.5, True, None, "x", [1, [2, 3]],
                                 {"a": {"b": [None]}}]


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int8", "uint64", "bool"])
def test_arrays_roundtrip_with_dtype_and_shape(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    (b,) = roundtrip([a])
    assert type(b) is np.ndarray and b.dtype == a.dtype and b.shape == a.shape
    assert np.array_equal(a, b)


def test_nan_inf_and_exact_floats_survive():
    a = np.array([np.nan, np.inf, -np.inf, 0.1, 1e-310, -0.0])
    (b, x) = roundtrip([a, float("nan")])
    assert np.array_equal(a, b, equal_nan=True) and math.isnan(x)
    assert np.signbit(b[-1]) and b[3] == 0.1


def test_numpy_scalars_become_python_scalars():
    out = roundtrip([np.float64(1.5), np.int32(7), np.bool_(True), np.array(3.0)])
    assert out[:3] == [1.5, 7, True] and [type(v) for v in out[:3]] == [float, int, bool]
    assert out[3].shape == () and out[3] == 3.0


class LyingFloat(float):
    def __eq__(self, other):
        return True


class Liar:
    def __eq__(self, other):
        return True

    def __float__(self):
        return 1.0


@pytest.mark.parametrize("value", [
    LyingFloat(1.0), Liar(), np.array([Liar()], dtype=object), np.array([1 + 2j]),
    type("L", (list,), {})([1]), type("D", (dict,), {})(a=1), {1: 2},
    {"__ndarray__": 1}, np.ma.masked_array([1.0]), {1.5}, b"bytes", np.datetime64("2020"),
])
def test_unsupported_values_are_rejected(value):
    with pytest.raises(OutputError):
        encode_outputs([value])


def test_cycles_and_depth_are_rejected():
    a = []
    a.append(a)
    with pytest.raises(OutputError, match="nested"):
        encode_outputs([a])


def test_size_cap():
    with pytest.raises(OutputError, match="MiB"):
        encode_outputs([np.zeros(harness.MAX_OUTPUT_BYTES // 8)])


@pytest.mark.parametrize("bad", [
    {"__ndarray__": {"dtype": "object", "shape": [1], "data": [1]}},
    {"__ndarray__": {"dtype": "float64", "shape": [3], "data": [1.0]}},
    {"__ndarray__": {"dtype": "float64", "shape": [-1], "data": []}},
    {"__ndarray__": {"dtype": "float64", "shape": [1], "data": [[1.0, 2.0]]}},
    {"__ndarray__": {"dtype": "int64", "shape": [1], "data": ["x"]}},
])
def test_decoder_rejects_forged_arrays(bad):
    with pytest.raises(OutputError):
        decode_outputs([bad])


def test_run_request_statuses_in_process():
    ok = harness.run_request({"code": "def f(x):\n    return x * 2\n", "entrypoint": "f",
                              "inputs": [{"x": 2}, {"x": 3}], "seed": 0, "driver": None})
    assert ok["status"] == "ok" and ok["outputs"] == [4, 6]
    err = harness.run_request({"code": "def f():\n    raise ValueError('boom')\n",
                               "entrypoint": "f", "inputs": [{}], "seed": 0, "driver": None})
    assert err["status"] == "error" and "ValueError: boom" in err["reason"]
    assert "candidate.py" in err["traceback"]
    missing = harness.run_request({"code": "x = 1\n", "entrypoint": "f", "inputs": [{}],
                                   "seed": 0, "driver": None})
    assert missing["status"] == "error" and "does not define f" in missing["reason"]
    syntax = harness.run_request({"code": "def f(:\n", "entrypoint": "f", "inputs": [{}],
                                  "seed": 0, "driver": None})
    assert syntax["status"] == "error" and "SyntaxError" in syntax["reason"]
    driver = "def drive(module, inputs, seed):\n    return [module.f(**i) + seed for i in inputs]\n"
    drv = harness.run_request({"code": "def f(x):\n    return x\n", "entrypoint": "f",
                               "inputs": [{"x": 1}], "seed": 5, "driver": driver})
    assert drv["status"] == "ok" and drv["outputs"] == [6]


def test_cli(tmp_path):
    import subprocess
    import sys

    req, resp = tmp_path / "req.json", tmp_path / "resp.json"
    req.write_text(json.dumps({"code": "import numpy as np\ndef f():\n    print('noise')\n"
                               "    return np.random.rand(2)\n", "entrypoint": "f",
                               "inputs": [{}], "seed": 3, "driver": None}))
    p = subprocess.run([sys.executable, harness.__file__, str(req), str(resp)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(resp.read_text())
    assert out["status"] == "ok" and p.stdout == "noise\n"
    np.random.seed(3)
    assert np.array_equal(decode_outputs(out["outputs"])[0], np.random.rand(2))


def test_driver_travels_compiled_and_falls_back_to_its_source():
    import json

    from evoforge.sandbox._common import compiled_driver, encode_request

    source = "def drive(module, inputs, seed):\n    return ['from source']\n"
    other = compiled_driver("def drive(module, inputs, seed):\n    return ['from code']\n")
    req = json.loads(encode_request("x = 1\n", "f", [{}], 0, source))
    assert req["driver_code"] == compiled_driver(source)
    assert harness.run_request(req)["outputs"] == ["from source"]
    # The compiled code object is what runs when its magic number is this interpreter's ...
    assert harness.run_request({**req, "driver_code": other})["outputs"] == ["from code"]
    # ... and the source when it is not (another Python in a container), or it is damaged.
    for bad in ({**other, "magic": "00000000"}, {**other, "marshal": "!!"}, None):
        assert harness.run_request({**req, "driver_code": bad})["outputs"] == ["from source"]
    # A driver that does not compile is reported, not a crash.
    broken = json.loads(encode_request("x = 1\n", "f", [{}], 0, "def drive(:\n"))
    assert broken["driver_code"] is None
    resp = harness.run_request(broken)
    assert resp["status"] == "error" and "SyntaxError" in resp["reason"]


def test_calls_are_positional_in_their_order_whatever_the_names():
    """Issue 12 item 9: a call's values go in order; a program may name its parameters freely."""
    code = "def f(count, scale=1):\n    return count * scale\n"
    resp = harness.run_request({"code": code, "entrypoint": "f", "seed": 0, "driver": None,
                                "inputs": [{"n": 2}, {"n": 3, "s": 10}, [4], [5, 2]]})
    assert resp["status"] == "ok" and resp["outputs"] == [2, 30, 4, 10], resp
    extra = harness.run_request({"code": "def f(n):\n    return n\n", "entrypoint": "f",
                                 "inputs": [{"n": 1, "m": 2}], "seed": 0, "driver": None})
    assert extra["status"] == "error" and "TypeError" in extra["reason"]
