from evoforge.evolution.program import (evolvable_regions, fixed_segments, has_evolve_blocks,
                                        outside_edit_reason, region_texts, replace_regions,
                                        syntax_check)

CODE = """import numpy as np
# EVOLVE-BLOCK-START
def f(x):
    return x + 1
# EVOLVE-BLOCK-END

def main():
    return f(2)
"""


def test_regions_found_between_markers():
    (r,) = evolvable_regions(CODE)
    assert CODE[r.start:r.end] == "def f(x):\n    return x + 1\n"
    assert (r.first_line, r.last_line) == (3, 4)
    assert has_evolve_blocks(CODE)
    assert not has_evolve_blocks("x = 1\n")


def test_multiple_and_unterminated_regions():
    code = "a\n# EVOLVE-BLOCK-START\nb\n# EVOLVE-BLOCK-END\nc\n  # EVOLVE-BLOCK-START\nd\ne"
    assert region_texts(code) == ["b\n", "d\ne"]
    assert fixed_segments(code) == ["a\n# EVOLVE-BLOCK-START\n",
                                    "# EVOLVE-BLOCK-END\nc\n  # EVOLVE-BLOCK-START\n", ""]
    assert evolvable_regions(code)[1].last_line == 8


def test_stray_end_marker_is_ignored():
    assert evolvable_regions("x = 1\n# EVOLVE-BLOCK-END\n") == []


def test_marker_inside_string_is_not_a_marker():
    assert evolvable_regions('s = "# EVOLVE-BLOCK-START"\n') == []


def test_outside_edit_detection():
    inside = CODE.replace("x + 1", "x * 3")
    assert outside_edit_reason(CODE, inside) is None
    outside = CODE.replace("f(2)", "f(3)")
    reason = outside_edit_reason(CODE, outside)
    assert "outside the EVOLVE-BLOCK" in reason and "return f(2)" in reason
    no_end = CODE.replace("# EVOLVE-BLOCK-END\n", "")
    assert "EVOLVE-BLOCK-END" in outside_edit_reason(CODE, no_end)
    no_markers = CODE.replace("# EVOLVE-BLOCK-START\n", "").replace("# EVOLVE-BLOCK-END\n", "")
    assert "markers" in outside_edit_reason(CODE, no_markers)
    assert outside_edit_reason("x = 1\n", "y = 2\n") is None  # no markers: all evolvable


def test_replace_regions_keeps_fixed_text():
    new = replace_regions(CODE, ["def f(x):\n    return 0"])
    assert fixed_segments(new) == fixed_segments(CODE)
    assert region_texts(new) == ["def f(x):\n    return 0\n"]


def test_syntax_check():
    assert syntax_check(CODE) is None
    err = syntax_check("def f(:\n    pass\n")
    assert err.startswith("SyntaxError") and "line 1" in err
    assert syntax_check("return 1\n")  # compile-time error, not just a parse error
    assert syntax_check("x = 1\x00\n")
    assert syntax_check("def f():\nreturn 1\n").startswith("IndentationError")
