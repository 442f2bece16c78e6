"""The examples of docs/python.md run, in order, in one namespace (as a notebook would), from a
copy of the repository's examples/.

Placeholder addresses are replaced before a block runs: the LLM's (http://127.0.0.1:8765/v1) by
a stand-in on loopback that answers with a real edit, and, in a block marked `# needs: server`,
the server's (http://127.0.0.1:8000) by a live `evoforge` server on loopback."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.api.conftest import start_server
from tests.llm.fake_openai import FakeOpenAI, Reply, diff_reply

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python.md"
LLM_URL = "http://127.0.0.1:8765/v1"
SERVER_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


def test_the_doc_has_examples_for_each_part():
    text = "\n".join(blocks())
    for call in ("evoforge.evolve(\"examples/curve_fit\"", "evoforge.evolve(program, evaluator",
                 "evoforge.evolve(program, score", "llm=", "evoforge.evaluate(", "evoforge.Client("):
        assert call in text, call


def test_the_examples_of_docs_python_md_run(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    server = None
    with FakeOpenAI(models=("default",)) as llm:
        llm.default = Reply(diff_reply("    a, b, c = 1.0, 0.0, 0.0\n", "    a, b, c = 1.5, -0.7, 0.3\n"))
        try:
            for i, code in enumerate(blocks()):
                if "# needs: server" in code:
                    server = server or start_server(f"sqlite:///{tmp_path / 'server.db'}")
                    code = code.replace(SERVER_URL, server.url)
                code = code.replace(LLM_URL, llm.base_url)
                try:
                    exec(compile(code, f"{DOC.name} block {i + 1}", "exec"), namespace)
                except Exception as exc:
                    raise AssertionError(f"block {i + 1} of docs/python.md failed:\n{code}") from exc
        finally:
            if server is not None:
                server.stop()
        assert llm.chat_requests(), "the LLM example made no model call"
    out = capsys.readouterr().out
    assert "Result(campaign" in out and "completed" in out
    assert namespace["result"].best_score >= namespace["result"].seed_score
    assert Path("scratch.db").is_file()  # in the working directory, not the checkout
