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


def method_rows():
    """README's method table as the registry gives it: name, the sections it reads, its summary."""
    from mie_jax.train import registry

    return [
        f"| `{spec.name}` | {', '.join(f'`{s}`' for s in sorted(spec.sections)) or '—'} | {spec.summary} |"
        for spec in registry.specs()
    ]


def test_the_method_table_lists_every_registered_method_as_the_registry_describes_it():
    table = [line for line in README.read_text().splitlines() if line.startswith("| `") and " | " in line]
    rows = method_rows()
    expected = "\n".join(rows)
    assert [line for line in table if line in rows] == rows, f"README's method table should read:\n{expected}"


def run_commands():
    """Every ``python -m experiments.run ...`` line of the README's shell blocks, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("#")[0].split("experiments.run", 1)[1].split() for line in lines if "experiments.run" in line]


def test_every_run_command_in_the_readme_parses_and_builds_its_config():
    from experiments import configs, run
    from mie_jax.train import make_config

    commands = run_commands()
    assert len(commands) >= 8
    for argv in commands:
        args = run.parse_args(argv)
        config = make_config(
            configs.get_config(args.dataset), args.overrides, method=args.method, variant=args.variant, seed=args.seed
        )
        assert config.method == args.method
