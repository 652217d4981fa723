"""The README's Python example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["maps"]["deepliftshap"][0].shape == (3, 64, 64)
    assert namespace["rescaled"].shape == (3, 64, 64)
    assert "gradcampp" in capsys.readouterr().out
