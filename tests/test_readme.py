"""Every ```python block of README.md runs, unmodified, on the tiny data it defines itself.

Each block is executed with `exec` in a fresh namespace (nothing injected: the blocks are
self-contained), from a private temporary directory (the blocks write model files). A block
that raises fails its test. The fences are counted independently of the extraction, and the
last test checks that every block found was executed, so a new block cannot go unrun.
"""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text):
    return [match.group(1) for match in FENCE.finditer(text)]


TEXT = README.read_text(encoding="utf-8")
BLOCKS = python_blocks(TEXT)
EXECUTED = set()


def test_every_python_fence_is_extracted():
    # Counted line by line, independently of FENCE: any opening fence tagged python/py.
    openings = [line for line in TEXT.splitlines() if re.match(r"^\s*```\s*(python|py)\b", line)]
    assert len(BLOCKS) == len(openings), (
        f"{len(openings)} python fences but {len(BLOCKS)} blocks extracted (unclosed or indented fence?)"
    )
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block_{i}")
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the block writes land here
    namespace = {"__name__": f"readme_block_{index}"}
    code = compile(BLOCKS[index], f"README.md python block {index}", "exec")
    exec(code, namespace)  # noqa: S102  (the README's own text, unmodified)
    EXECUTED.add(index)


def test_every_block_was_executed(request):
    """Last in the file: after a run of the whole module every block has run (and passed)."""
    selected = {item.name for item in request.session.items}
    wanted = {f"test_readme_block_runs[block_{i}]" for i in range(len(BLOCKS))}
    if not wanted <= selected:
        pytest.skip("only part of the README blocks were selected")
    assert len(BLOCKS) >= 3
    assert EXECUTED == set(range(len(BLOCKS))), (
        f"blocks not executed successfully: {sorted(set(range(len(BLOCKS))) - EXECUTED)}"
    )
