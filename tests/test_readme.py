"""The Python examples of README.md run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    namespace = {"__name__": "readme_example"}
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), namespace)
    assert capsys.readouterr().out.strip(), "every example prints something"
