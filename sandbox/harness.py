"""Runs one candidate inside a sandbox and turns its outputs into plain data.

Standalone (stdlib + numpy only) so every runner can use it:

    python3 harness.py REQUEST.json RESPONSE.json      # subprocess, bubblewrap, Docker
    run_request(request) -> response                   # the fork-server calls it directly

REQUEST:  {"code": str, "entrypoint": str, "inputs": [call, ...], "seed": int, "driver": str|null,
           "driver_code": {"magic": hex, "marshal": base64}|null (the driver, compiled by the
           trusted side; used when `magic` is this interpreter's, else the source is compiled)}
RESPONSE: {"status": "ok"|"error"|"memory", "outputs": [...], "reason": str, "traceback": str}

A call is the entrypoint's arguments, passed positionally: a list, or a dict whose values are
passed in its order (its names are for the trusted side: scoring, logs). So `pack_circles(count)`
works as well as `pack_circles(n)`. A driver gets the calls as they are.

Outputs are converted in the candidate's process with exact type checks: int, float, bool, str,
None, list, tuple (becomes a list), dict with str keys, numpy ndarrays of bool/int/uint/float
dtype and numpy scalars. Anything else (subclasses, objects with their own __eq__ or __float__,
object arrays) is an "error". Arrays travel as
{"__ndarray__": {"dtype": "float64", "shape": [..], "data": [flat list]}} and `decode_outputs`
turns them back into arrays on the trusted side. NaN and infinities survive (JSON NaN/Infinity).

Optional environment for the CLI (set by trusted runners, never by the candidate):
EVOFORGE_LIMITS = JSON {"memory_mb", "cpu_s", "nproc", "nofile", "fsize_mb"} applied as rlimits
(memory relative to the interpreter's address space once numpy is loaded), and EVOFORGE_UID /
EVOFORGE_GID: when started as root, drop to that uid/gid before the candidate runs.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import linecache
import marshal
import math
import os
import random
import sys
import traceback
import types

import numpy as np

sys.dont_write_bytecode = True  # imports inside a run leave no __pycache__ in its scratch

MAX_OUTPUT_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
TRACEBACK_CHARS = 4000
REASON_CHARS = 300
ARRAY_KEY = "__ndarray__"

OK, ERROR, MEMORY = "ok", "error", "memory"

# Captured at import, before any candidate code runs, so monkeypatching builtins or numpy in the
# candidate cannot change how its outputs are checked.
_type = type
_ENCODER = json.JSONEncoder(allow_nan=True, separators=(",", ":"))
_len = len
_dict, _dict_values = dict, dict.values
_MAGIC = importlib.util.MAGIC_NUMBER.hex()
_isfinite = math.isfinite
_ndarray = np.ndarray
_ALLOWED_KINDS = frozenset("biuf")
_ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64"])
_NP_SCALARS = {
    np.bool_: bool, np.int8: int, np.int16: int, np.int32: int, np.int64: int,
    np.uint8: int, np.uint16: int, np.uint32: int, np.uint64: int,
    np.float16: float, np.float32: float, np.float64: float,
}
_np_int_item = {t: t.item for t in _NP_SCALARS}


class OutputError(ValueError):
    """A returned value cannot cross the sandbox boundary."""


# ---------------------------------------------------------------------------- encoding


def encode_outputs(outputs: list) -> list:
    """Plain-data form of a list of outputs (raises OutputError on anything unsupported)."""
    budget = [MAX_OUTPUT_BYTES]
    return [_encode(v, 0, budget, f"output[{i}]") for i, v in enumerate(outputs)]


def _spend(budget: list, n: int, where: str) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise OutputError(f"{where}: outputs exceed {MAX_OUTPUT_BYTES // (1024 * 1024)} MiB")


def _encode(v, depth: int, budget: list, where: str):
    if depth > MAX_DEPTH:
        raise OutputError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    t = _type(v)
    if v is None or t is bool:
        _spend(budget, 5, where)
        return v
    if t is int:
        if v.bit_length() > 4096:
            raise OutputError(f"{where}: integer too large")
        _spend(budget, 8 + v.bit_length() // 3, where)
        return int.__int__(v)
    if t is float:
        _spend(budget, 24, where)
        return float.__float__(v)
    if t is str:
        _spend(budget, _len(v) + 2, where)
        return str.__str__(v)
    if t is list or t is tuple:
        _spend(budget, 2 + _len(v), where)
        return [_encode(x, depth + 1, budget, f"{where}[{i}]") for i, x in enumerate(v)]
    if t is dict:
        out = {}
        for k, x in dict.items(v):
            if _type(k) is not str:
                raise OutputError(f"{where}: dict keys must be str, got {_type(k).__name__}")
            if k == ARRAY_KEY:
                raise OutputError(f"{where}: dict key {ARRAY_KEY!r} is reserved")
            _spend(budget, _len(k) + 4, where)
            out[str.__str__(k)] = _encode(x, depth + 1, budget, f"{where}[{k!r}]")
        return out
    if t is _ndarray:
        return _encode_array(v, budget, where)
    if t in _NP_SCALARS:
        _spend(budget, 24, where)
        return _NP_SCALARS[t](_np_int_item[t](v))
    raise OutputError(f"{where}: unsupported type {_describe(t)} (return numbers, str, lists, "
                      f"dicts or numeric numpy arrays)")


def _describe(t) -> str:
    try:
        return f"{t.__module__}.{t.__qualname__}"
    except Exception:  # a metaclass that lies about its names
        return "<unknown type>"


def _encode_array(a, budget: list, where: str) -> dict:
    dt = a.dtype
    if dt.kind not in _ALLOWED_KINDS or dt.fields is not None or dt.name not in _ALLOWED_DTYPES:
        raise OutputError(f"{where}: unsupported array dtype {dt!s} (use bool, int, uint or float)")
    _spend(budget, 64 + a.size * (6 if dt.kind == "b" else 24), where)
    flat = np.ascontiguousarray(a).ravel()
    data = _ndarray.tolist(flat)
    return {ARRAY_KEY: {"dtype": dt.name, "shape": [int(s) for s in a.shape], "data": data}}


# ---------------------------------------------------------------------------- decoding


def decode_outputs(outputs: list) -> list:
    """Trusted side: turn encoded outputs back into Python values and numpy arrays."""
    if _type(outputs) is not list:
        raise OutputError("outputs must be a list")
    return [_decode(v, 0) for v in outputs]


def _decode(v, depth: int):
    if depth > MAX_DEPTH + 2:
        raise OutputError("outputs nested too deeply")
    t = _type(v)
    if v is None or t in (bool, int, float, str):
        return v
    if t is list:
        return [_decode(x, depth + 1) for x in v]
    if t is dict:
        if ARRAY_KEY in v:
            return _decode_array(v)
        return {k: _decode(x, depth + 1) for k, x in v.items()}
    raise OutputError(f"unexpected value of type {t.__name__} in outputs")


def _decode_array(v: dict) -> np.ndarray:
    if _len(v) != 1 or _type(v[ARRAY_KEY]) is not dict:
        raise OutputError("malformed array")
    spec = v[ARRAY_KEY]
    dtype, shape, data = spec.get("dtype"), spec.get("shape"), spec.get("data")
    if dtype not in _ALLOWED_DTYPES:
        raise OutputError(f"array dtype {dtype!r} not allowed")
    if (_type(shape) is not list or _len(shape) > 32
            or any(_type(s) is not int or s < 0 for s in shape)):
        raise OutputError("malformed array shape")
    if _type(data) is not list or _len(data) != math.prod(shape):
        raise OutputError("array data does not match its shape")
    try:
        arr = np.array(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OutputError(f"array data does not match dtype {dtype}: {exc}") from None
    if arr.ndim != 1:
        raise OutputError("array data must be a flat list")
    return arr.reshape(shape)


# ---------------------------------------------------------------------------- running


def _tail(s: str, n: int) -> str:
    return s if _len(s) <= n else "..." + s[-n:]


def _exc_summary(exc: BaseException) -> str:
    try:
        msg = f"{_type(exc).__name__}: {exc}"
    except Exception:
        msg = f"{_describe(_type(exc))}: <unprintable>"
    msg = msg.splitlines()[0] if msg else "error"
    return msg[:REASON_CHARS]


def _format_tb() -> str:
    try:
        return _tail(traceback.format_exc(limit=20), TRACEBACK_CHARS)
    except BaseException:  # noqa: BLE001 - a hostile exception object
        return ""


def _response(status: str, outputs=None, reason: str = "", tb: str = "") -> dict:
    return {"status": status, "outputs": outputs or [], "reason": reason, "traceback": tb}


def run_request(request: dict) -> dict:
    """Run the candidate described by `request`; never raises."""
    try:
        code, entrypoint = request["code"], request["entrypoint"]
        inputs, seed, driver = request.get("inputs") or [], int(request.get("seed", 0)), \
            request.get("driver")
    except Exception as exc:  # noqa: BLE001
        return _response(ERROR, reason=f"bad request: {exc!r}"[:REASON_CHARS])
    stage = "loading the driver"
    try:
        # The driver (trusted, standard library only) is loaded and its module body run before
        # any candidate code. One that sets CANDIDATE = "source" loads the program itself
        # (OpenEvolve's evaluators import it from a file): it gets the module unexecuted, so the
        # program's top-level code runs once.
        drive_ns: dict | None = None
        if driver is not None:
            drive_ns = {"__name__": "evoforge_driver"}
            exec(_driver_code(driver, request.get("driver_code")), drive_ns)  # noqa: S102
        stage = "loading the program"
        random.seed(seed)
        np.random.seed(seed % (2 ** 32))
        module = types.ModuleType("candidate")
        module.__file__ = "candidate.py"
        sys.modules["candidate"] = module
        # Source lines for tracebacks, and for drivers that need the text (OpenEvolve's writes
        # it to a file for the evaluator).
        linecache.cache["candidate.py"] = (_len(code), None, code.splitlines(True), "candidate.py")
        if drive_ns is None or drive_ns.get("CANDIDATE") != "source":
            exec(compile(code, "candidate.py", "exec"), module.__dict__)  # noqa: S102
        if drive_ns is not None:
            stage = "running the driver"
            raw = drive_ns["drive"](module, inputs, seed)
            if _type(raw) is not list:
                raise OutputError(f"driver returned {_describe(_type(raw))}, expected list")
            outputs = encode_outputs(raw)
        else:
            fn = module.__dict__.get(entrypoint)
            if fn is None or not callable(fn):
                return _response(ERROR, reason=f"the program does not define {entrypoint}()")
            outputs, budget = [], [MAX_OUTPUT_BYTES]
            for i, call in enumerate(inputs):
                stage = f"calling {entrypoint} on input {i}"
                args = _dict_values(call) if _type(call) is _dict else call
                # Encode at once: later calls cannot mutate what an earlier call returned.
                outputs.append(_encode(fn(*args), 0, budget, f"output[{i}]"))
        return _response(OK, outputs)
    except MemoryError as exc:
        return _response(MEMORY, reason=f"{_exc_summary(exc)} while {stage}",
                         tb=_format_tb())
    except OutputError as exc:
        return _response(ERROR, reason=f"invalid output: {exc}"[:REASON_CHARS])
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
        return _response(ERROR, reason=f"{_exc_summary(exc)} (while {stage})"[:REASON_CHARS],
                         tb=_format_tb())


def _driver_code(source: str, compiled: dict | None) -> types.CodeType:
    if isinstance(compiled, dict) and compiled.get("magic") == _MAGIC:
        try:
            code = marshal.loads(base64.b64decode(compiled["marshal"]))
            if _type(code) is types.CodeType:
                return code
        except (KeyError, ValueError, TypeError, EOFError):
            pass
    return compile(source, "driver.py", "exec")


def dump_response(response: dict) -> bytes:
    """Serialise a response; oversized or unserialisable ones become an error response."""
    try:
        # iterencode(_one_shot) goes straight to the C encoder captured at import: patched
        # builtins (isinstance, ...) or json.dumps in the candidate do not reach it.
        blob = "".join(_ENCODER.iterencode(response, True)).encode()
    except BaseException:  # noqa: BLE001 - the candidate broke the encoder itself
        blob = _UNSERIALISABLE
    if _len(blob) > MAX_OUTPUT_BYTES + 65536:
        blob = _TOO_LARGE
    return blob


_UNSERIALISABLE = json.dumps(_response(ERROR, reason="cannot serialise the outputs")).encode()
_TOO_LARGE = json.dumps(_response(ERROR, reason="outputs exceed the size limit")).encode()


# ---------------------------------------------------------------------------- CLI


def apply_limits(limits: dict) -> None:
    """Set rlimits (trusted code, before the candidate runs)."""
    import resource

    def lim(res, value):
        value = int(value)
        resource.setrlimit(res, (value, value))

    if limits.get("memory_mb"):
        lim(resource.RLIMIT_AS, address_space_bytes() + int(limits["memory_mb"]) * 2 ** 20)
    if limits.get("cpu_s"):
        soft = int(math.ceil(float(limits["cpu_s"])))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    if limits.get("nproc"):
        lim(resource.RLIMIT_NPROC, limits["nproc"])
    if limits.get("nofile"):
        lim(resource.RLIMIT_NOFILE, limits["nofile"])
    if limits.get("fsize_mb"):
        lim(resource.RLIMIT_FSIZE, int(limits["fsize_mb"]) * 2 ** 20)
    lim(resource.RLIMIT_CORE, 0)


_AS_BASELINE: list = []


def note_address_space(statm_fd: int) -> None:
    """For a forking parent (the fork-server, just before each fork): record its own address
    space from an open /proc/<pid>/statm; the child starts with the same mappings, so this is
    its baseline, and the child need not read /proc itself."""
    _AS_BASELINE[:] = [int(os.pread(statm_fd, 64, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE")]


def address_space_bytes() -> int:
    """The interpreter's address space, read once (RLIMIT_AS = this + memory_mb)."""
    if not _AS_BASELINE:
        try:
            with open("/proc/self/statm") as f:
                _AS_BASELINE.append(int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE"))
        except OSError:
            _AS_BASELINE.append(512 * 2 ** 20)  # no /proc here: assume a numpy interpreter
    return _AS_BASELINE[0]


def drop_privileges(uid: int, gid: int) -> None:
    if os.getuid() != 0:
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError("could not drop privileges")
    try:  # setuid binaries can never regain privileges for this process tree
        import ctypes

        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    except Exception:  # noqa: BLE001 - best effort outside Linux/glibc
        pass


def main(argv: list[str]) -> int:
    if _len(argv) != 3:
        print("usage: harness.py REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        request = json.loads(f.read())
    out = open(argv[2], "wb")  # opened before the drop: the path may be root-only
    limits = os.environ.get("EVOFORGE_LIMITS")
    if limits:
        apply_limits(json.loads(limits))
    if os.environ.get("EVOFORGE_UID"):
        uid = int(os.environ["EVOFORGE_UID"])
        drop_privileges(uid, int(os.environ.get("EVOFORGE_GID", uid)))
    for key in ("EVOFORGE_LIMITS", "EVOFORGE_UID", "EVOFORGE_GID"):
        os.environ.pop(key, None)
    blob = dump_response(run_request(request))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the candidate may have replaced or closed it
            pass
    try:
        out.write(blob)
        out.flush()
    except OSError:
        pass
    os._exit(0)  # no atexit handlers or lingering candidate threads


if __name__ == "__main__":
    sys.exit(main(sys.argv))
