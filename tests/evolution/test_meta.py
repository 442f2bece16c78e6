from evoforge.evolution.meta import Outcome, build_meta_note


def test_meta_note_summarises_improvements_and_failures():
    note = build_meta_note([
        Outcome("ok", 2.0, 1.5, "llm:diff"),
        Outcome("ok", 1.0, 1.5, "llm:diff"),
        Outcome("invalid", 0.0, 1.5, "llm:diff", "circles 3 and 4 overlap"),
        Outcome("invalid", 0.0, 1.5, "llm:diff", "circles 3 and 4 overlap"),
        Outcome("rejected", None, 1.5, "llm:diff", "SEARCH block not found: foo"),
    ])
    assert "last 5 attempts" in note and "invalid 2" in note
    assert "1 improved" in note and "+0.5" in note
    assert "circles 3 and 4 overlap (x2)" in note


def test_meta_note_without_improvement_says_so():
    note = build_meta_note([Outcome("ok", 1.0, 1.5, "ast:const")])
    assert "None improved" in note
    assert build_meta_note([]) == ""
