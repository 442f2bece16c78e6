import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from evoforge.evolution.hashing import (cache_key, canonical_json, canonicalize, code_hash, exact_form,
                                        functional_hash, normalize_code, run_hash)

PROGRAM = '''"""Module docstring."""
import numpy as np


def pack(n):
    """Pack n circles."""
    x = np.linspace(0.1, 0.9, n)   # centres
    return x * 0.5
'''

REFORMATTED = '''import numpy as np
def pack(n):
    # a comment
    x = np.linspace( 0.1,0.9 , n )
    return (x*0.5)
'''


def test_normalised_code_ignores_reformatting_comments_docstrings():
    # For similarity (novelty gate, AST mutator, code size) only: never for cache identity.
    assert normalize_code(PROGRAM) == normalize_code(REFORMATTED)


@pytest.mark.parametrize("variant", [
    PROGRAM.replace("Pack n circles.", "Pack n circles!"),      # __doc__ differs
    PROGRAM.replace("# centres", "# centers"),                  # inspect.getsource differs
    PROGRAM.replace("import numpy as np\n", "import numpy as np\n\n"),  # line numbers differ
    PROGRAM.replace("    return", "    return "),              # the source text differs
    REFORMATTED,
    PROGRAM.replace("\n", "\r\n"),                               # the file's bytes differ
])
def test_anything_a_program_can_observe_changes_code_hash(variant):
    # Changed from "docstrings and comments are ignored": a program can read them at run time
    # (__doc__, inspect.getsource, its own file, traceback lines), so only the exact source
    # may share a code-cache entry.
    assert variant != PROGRAM
    assert code_hash(variant) != code_hash(PROGRAM)
    assert code_hash(PROGRAM) == code_hash(str(PROGRAM))


def test_run_hash_covers_the_seed_of_the_candidates_rngs():
    assert run_hash(PROGRAM, 0) == run_hash(PROGRAM, 0)
    assert run_hash(PROGRAM, 0) != run_hash(PROGRAM, 1)
    assert run_hash(PROGRAM, 0) != run_hash(PROGRAM.replace("0.5", "0.6"), 0)
    assert run_hash(PROGRAM, 0) != code_hash(PROGRAM)
    # The seed prefix is self-delimiting: seed 1 + "2..." is not seed 12 + "...".
    assert run_hash("2\nx = 1", 1) != run_hash("x = 1", 12)


def test_cache_key_separates_scopes_and_kinds():
    h = code_hash(PROGRAM)
    keys = {cache_key(scope, kind, h) for scope in ("project:1", "project:2", "open", "shared")
            for kind in ("code", "functional")}
    assert len(keys) == 8
    assert h not in keys                                  # v1 rows (raw hashes) never match
    assert cache_key("project:1", "code", h) == cache_key("project:1", "code", h)
    assert cache_key("project:1", "code", h) != cache_key("project:11", "code", h)


def test_changed_constant_changes_code_hash():
    assert code_hash(PROGRAM) != code_hash(PROGRAM.replace("0.5", "0.6"))


def test_renamed_variable_changes_code_hash():
    assert code_hash(PROGRAM) != code_hash(PROGRAM.replace("x", "y"))


def test_docstring_only_body_keeps_valid_code():
    out = normalize_code('def f():\n    """only a docstring"""\n')
    assert out == "def f():\n    pass"
    compile(out, "t", "exec")


def test_unparsable_code_falls_back_to_whitespace_normalisation():
    a = "def f(:\n    return 1   \n\n"
    b = "def f(:\r\n    return 1\n"
    assert normalize_code(a) == normalize_code(b)
    assert normalize_code(a) != normalize_code("def f(:\n    return 2\n")
    assert normalize_code(a).startswith("# unparsable")
    assert code_hash(a) != code_hash(b)               # the code hash is of the exact text


def test_functional_hash_is_exact():
    # Changed from "rounds to 10 significant digits": a radius 1e-12 too large is an invalid
    # packing (zero tolerance), so outputs that differ at all must not share a cached score.
    k = "circle_packing@1:abc"
    assert functional_hash(k, [1.0000000000001]) != functional_hash(k, [1.0])
    assert functional_hash(k, [np.array([1.0000000000001, 2.0])]) != \
        functional_hash(k, [np.array([1.0, 2.0])])
    assert functional_hash(k, [-0.0]) != functional_hash(k, [0.0])
    assert functional_hash(k, [np.zeros(3, np.float32)]) != functional_hash(k, [np.zeros(3)])
    assert functional_hash(k, [np.arange(3, dtype=np.uint8)]) != functional_hash(k, [np.arange(3)])
    assert functional_hash(k, [np.float32(0.5)]) != functional_hash(k, [0.5])
    assert functional_hash(k, [1]) != functional_hash(k, [1.0]) != functional_hash(k, [True])
    # A scorer may iterate a dict in order (a float sum depends on it): the order is kept.
    assert functional_hash(k, [{"a": 0.1, "b": 0.2}]) != functional_hash(k, [{"b": 0.2, "a": 0.1}])
    assert functional_hash(k, [float("nan")]) == functional_hash(k, [float("nan")])
    assert functional_hash(k, [[1.0, 2.0]]) == functional_hash(k, [(1.0, 2.0)])


def test_exact_form_cannot_be_imitated_by_plain_data():
    arr = np.array([1.0, 2.0])
    fake = exact_form(arr)  # a dict that spells the array's tagged form
    assert exact_form(fake) != exact_form(arr)
    assert exact_form({"__float__": (1.0).hex()}) != exact_form(1.0)
    assert exact_form(["0x1.0000000000000p+0"]) != exact_form([1.0])
    with pytest.raises(TypeError):
        exact_form({1, 2})


def test_functional_hash_depends_on_task_key():
    assert functional_hash("a", [1.0]) != functional_hash("b", [1.0])


def test_canonicalize_special_floats():
    assert canonicalize(-0.0) == 0.0 and math.copysign(1, canonicalize(-0.0)) == 1
    assert canonicalize(float("nan")) == {"__float__": "NaN"}
    assert canonicalize(float("inf")) == {"__float__": "Infinity"}
    assert canonicalize(-math.inf) == {"__float__": "-Infinity"}
    assert canonicalize(np.float64("nan")) == canonicalize(float("nan"))
    # rounding the largest float must not make it infinite
    assert math.isfinite(canonicalize(1.7976931348623157e308))


def test_canonicalize_keeps_types_apart():
    assert canonicalize(True) is True
    assert canonicalize(1) == 1 and isinstance(canonicalize(1), int)
    assert canonical_json(True) != canonical_json(1)
    assert canonical_json(1) != canonical_json(1.0)
    assert canonical_json("NaN") != canonical_json(float("nan"))
    assert canonicalize(np.int32(3)) == 3 and isinstance(canonicalize(np.int32(3)), int)
    assert canonicalize(np.bool_(True)) is True


def test_canonicalize_arrays():
    a = canonicalize(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert a == {"__ndarray__": {"kind": "i", "shape": [2, 3], "values": [0, 1, 2, 3, 4, 5]}}
    assert canonicalize(np.arange(3, dtype=np.uint8)) == canonicalize(np.arange(3))
    assert canonical_json(np.zeros(3)) != canonical_json(np.zeros(3, dtype=int))
    assert canonical_json(np.zeros((3, 1))) != canonical_json(np.zeros((1, 3)))
    assert canonical_json(np.zeros(3)) != canonical_json([0.0, 0.0, 0.0])


def test_dict_cannot_impersonate_an_array():
    arr = np.array([1.0, 2.0])
    fake = {"__ndarray__": {"kind": "f", "shape": [2], "values": [1.0, 2.0]}}
    assert canonical_json(arr) != canonical_json(fake)


def test_dict_keys_sorted_and_order_independent():
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})
    assert canonical_json({1: "x", "1": "y"}) == canonical_json({"1": "y", 1: "x"})


def test_canonicalize_rejects_objects():
    with pytest.raises(TypeError):
        canonicalize(object())
    with pytest.raises(TypeError):
        canonicalize({1, 2})


finite = st.floats(allow_nan=False, allow_infinity=False)
plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=4),
    max_leaves=20)


def _reverse_dicts(v):
    if isinstance(v, dict):
        return {k: _reverse_dicts(x) for k, x in reversed(list(v.items()))}
    if isinstance(v, list):
        return [_reverse_dicts(x) for x in v]
    return v


@given(plain)
def test_canonical_json_is_safe_and_independent_of_dict_order(value):
    text = canonical_json(value)  # never raises: NaN/inf never reach JSON as bare numbers
    assert "NaN" not in text.replace('"NaN"', "")
    assert canonical_json(_reverse_dicts(value)) == text


@given(finite)
def test_rounding_is_a_fixed_point(x):
    r = canonicalize(x)
    assert canonicalize(r) == r
    if x != 0:
        assert abs(r - x) <= abs(x) * 1e-9


@given(st.lists(finite, max_size=10))
def test_list_tuple_and_array_of_python_floats(xs):
    assert functional_hash("k", [xs]) == functional_hash("k", [tuple(xs)])


@given(plain)
def test_functional_hash_is_equal_exactly_for_equal_data(value):
    import copy
    assert functional_hash("k", [value]) == functional_hash("k", [copy.deepcopy(value)])
