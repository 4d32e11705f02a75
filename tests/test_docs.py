"""The README matches the code: its two opening commands, the methods table, the CLI commands (its examples run
in tests/test_readme.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pruning_core as pc
from pruning_core.infra.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_the_run_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    assert README.index("```bash") < README.index("## ")


def test_every_registered_method_has_a_row_with_its_paper():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", README, re.M)}
    for name, spec in pc.METHODS.items():
        assert name in rows, f"README's methods table lacks {name}"
        first_author = re.search(r"(?:de |van |von )?[A-Z][a-z]+(?= (?:et al\.|&|\d))", spec.paper).group(0)
        assert first_author in rows[name], f"{name}: README row does not cite {spec.paper}"
        if spec.score is not None and spec.default_iterations > 1:
            assert f"({spec.default_iterations} rounds" in rows[name], f"{name}: README gives other default rounds"
    assert set(rows) - set(pc.METHODS) == set(), "README lists methods that are not registered"


def test_every_cli_command_is_shown():
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert f"pruning-core {command}" in README, command


def test_the_scaling_out_commands_parse():
    section = README[README.index("## Scaling out"):README.index("## Benchmarks")]
    text = section.replace("\\\n", " ")
    commands = [line.split("#")[0].split() for line in text.splitlines()
                if line.startswith("pruning-core ")]
    assert len(commands) >= 3
    parser = build_parser()
    for words in commands:
        args = parser.parse_args(words[1:])  # a flag the CLI lacks is a UsageError here
        assert args.engine == "ray"
