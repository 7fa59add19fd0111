"""README.ko.md, the Korean quick start: its Python blocks run, and their shape asserts hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.ko.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_korean_quick_start_is_linked_from_the_readme():
    assert "(README.ko.md)" in (README.parent / "README.md").read_text(encoding="utf-8")
    assert "python -m pip install torch==2.13.0 -e . && rnnkit train" in README.read_text()


def test_its_python_blocks_run_in_order():
    blocks = python_blocks()
    assert len(blocks) >= 5 and sum(block.count("assert ") for block in blocks) >= 10
    namespace: dict = {}
    for block in blocks:  # each block continues the one before, as a reader's session does
        exec(compile(block, str(README), "exec"), namespace)


@pytest.mark.parametrize("wrong", ["== (100, 30, 64)", "== (2, 30, 64)"])
def test_a_wrong_shape_in_it_would_fail(wrong):
    # The asserts are real: the first block with a changed expected shape fails.
    block = python_blocks()[0].replace(wrong, "== (1, 2, 3)", 1)
    with pytest.raises(AssertionError):
        exec(compile(block, str(README), "exec"), {})
