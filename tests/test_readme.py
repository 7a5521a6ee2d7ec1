"""The README's examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_optax_chain_example_runs_and_reduces_the_loss(capsys):
    (example,) = python_blocks()
    exec(compile(example, str(README), "exec"), {})
    start, end = map(float, re.search(r"loss (\S+) -> (\S+)", capsys.readouterr().out).groups())
    assert end < 0.5 * start
