from evoforge.evolution.diff import (apply_diff, apply_reply, extract_rewrite, fenced_code, parse_blocks)

CODE = """import math
# EVOLVE-BLOCK-START
def f(x):
    if x > 0:
        return x * 2
    return 0
# EVOLVE-BLOCK-END


def main():
    return f(3)
"""

PLAIN = """def f(x):
    total = 0
    for i in range(x):
        total += i
    return total
"""


def block(search, replace):
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def test_exact_match_applies():
    out = apply_diff(CODE, block("        return x * 2\n", "        return x * 3\n"))
    assert out.ok and out.applied == 1 and out.error == ""
    assert "return x * 3" in out.code and "return x * 2" not in out.code


def test_reply_with_prose_and_fences_and_several_blocks():
    reply = ("I will change two things.\n```python\n"
             + block("    if x > 0:\n", "    if x >= 0:\n")
             + "```\nand\n```python\n"
             + block("    return 0\n", "    return -1\n") + "```\n")
    out = apply_diff(CODE, reply)
    assert out.ok and out.applied == 2 and out.blocks == 2
    assert "if x >= 0:" in out.code and "return -1" in out.code


def test_missing_search_block_is_reported_by_its_first_line():
    reply = block("    if x > 100:\n        return 7\n", "    pass\n")
    out = apply_diff(CODE, reply)
    assert out.code is None
    assert "if x > 100:" in out.error and "did not match" in out.error
    assert out.failed == ["if x > 100:"]


def test_one_missing_block_fails_the_whole_edit():
    reply = block("    return 0\n", "    return 1\n") + block("nowhere()\n", "x\n")
    out = apply_diff(CODE, reply)
    assert out.code is None and out.applied == 1 and "nowhere()" in out.error


def test_edit_outside_evolve_block_is_rejected():
    out = apply_diff(CODE, block("def main():\n    return f(3)\n", "def main():\n    return 9\n"))
    assert out.code is None
    assert "outside the EVOLVE-BLOCK" in out.error and "def main():" in out.error


def test_edit_removing_markers_is_rejected():
    out = apply_diff(CODE, block("# EVOLVE-BLOCK-END\n", "\n"))
    assert out.code is None and "EVOLVE-BLOCK" in out.error


def test_search_including_marker_line_but_keeping_it_is_allowed():
    reply = block("# EVOLVE-BLOCK-START\ndef f(x):\n", "# EVOLVE-BLOCK-START\ndef f(x, y=1):\n")
    out = apply_diff(CODE, reply)
    assert out.ok and "def f(x, y=1):" in out.code


def test_whitespace_tolerant_match_reindents_replacement():
    # the model dropped the function's indentation and added trailing spaces
    reply = block("for i in range(x):   \n    total += i\n",
                  "for i in range(x):\n    total += 2 * i\nprint(total)\n")
    out = apply_diff(PLAIN, reply)
    assert out.ok, out.error
    assert "    for i in range(x):\n        total += 2 * i\n    print(total)\n" in out.code
    compile(out.code, "t", "exec")


def test_whitespace_tolerant_match_removes_extra_indentation():
    reply = block("        total = 0\n        for i in range(x):\n",
                  "        total = 1\n        for i in range(x):\n")
    out = apply_diff(PLAIN, reply)
    assert out.ok, out.error
    assert "    total = 1\n    for i in range(x):\n" in out.code


def test_inconsistent_indentation_does_not_match():
    reply = block("total = 0\n        for i in range(x):\n", "total = 1\n")
    out = apply_diff(PLAIN, reply)
    assert out.code is None and "did not match" in out.error


def test_result_must_parse():
    out = apply_diff(CODE, block("    return 0\n", "    return (0\n"))
    assert out.code is None and "does not parse" in out.error


def test_malformed_and_empty_replies():
    assert "no SEARCH/REPLACE" in apply_diff(CODE, "just prose").error
    assert "malformed" in apply_diff(CODE, "<<<<<<< SEARCH\nx\n>>>>>>> REPLACE\n").error
    assert "empty" in apply_diff(CODE, block("\n", "x = 1\n")).error


def test_parse_blocks_accepts_marker_length_variants():
    blocks = parse_blocks("<<<<<<<< SEARCH\na\n========\nb\n>>>>>>>> REPLACE\n")
    assert [(b.search, b.replace) for b in blocks] == [("a\n", "b\n")]


def test_duplicate_search_text_prefers_occurrence_inside_block():
    code = ("x = 1\n# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n")
    out = apply_diff(code, block("x = 1\n", "x = 2\n"))
    assert out.ok and out.code == "x = 1\n# EVOLVE-BLOCK-START\nx = 2\n# EVOLVE-BLOCK-END\n"


def test_rewrite_without_markers_is_spliced_into_the_block():
    reply = "Here:\n```python\ndef f(x):\n    return x ** 2\n```\n"
    out = extract_rewrite(reply, CODE)
    assert out.ok and out.kind == "rewrite"
    assert out.code.startswith("import math\n# EVOLVE-BLOCK-START\ndef f(x):\n    return x ** 2\n")
    assert out.code.endswith("# EVOLVE-BLOCK-END\n\n\ndef main():\n    return f(3)\n")


def test_rewrite_repeating_fixed_parts_keeps_original_fixed_parts():
    rewrite = CODE.replace("return x * 2", "return x * 5").replace("f(3)", "f(100)")
    out = extract_rewrite(f"```python\n{rewrite}```", CODE)
    assert out.ok
    assert "return x * 5" in out.code and "f(3)" in out.code and "f(100)" not in out.code


def test_rewrite_without_markers_repeating_head_and_tail():
    rewrite = "import math\ndef f(x):\n    return 1\n\n\ndef main():\n    return f(3)\n"
    out = extract_rewrite(f"```python\n{rewrite}```", CODE)
    assert out.ok
    assert out.code == ("import math\n# EVOLVE-BLOCK-START\ndef f(x):\n    return 1\n"
                        "# EVOLVE-BLOCK-END\n\n\ndef main():\n    return f(3)\n")


def test_rewrite_errors():
    assert "no fenced code" in extract_rewrite("no code here", CODE).error
    assert "does not parse" in extract_rewrite("```python\ndef f(:\n```", PLAIN).error
    two = "a = 1\n# EVOLVE-BLOCK-START\nb = 1\n# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-START\nc = 1\n# EVOLVE-BLOCK-END\n"
    assert "EVOLVE-BLOCK" in extract_rewrite("```python\nb = 2\n```", two).error


def test_fenced_code_prefers_python_blocks():
    reply = "```\nlonger plain text block here\n```\n```python\nx = 1\n```\n"
    assert fenced_code(reply) == "x = 1\n"


def test_apply_reply_dispatches():
    assert apply_reply(PLAIN, block("    return total\n", "    return -total\n")).kind == "diff"
    assert apply_reply(PLAIN, "```python\nx = 1\n```").code == "x = 1\n"
