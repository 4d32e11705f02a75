"""Every example in README.md runs as written, the way a newcomer runs it: after the set-up the README gives
(`make run` or `make test`, then `source .venv/bin/activate`), from a folder outside the repository.

Each ```bash and ```python block is extracted from the README. Python blocks run in a subprocess from a temporary
folder with its own run store; bash commands run one by one, in order, in one temporary folder (so `runs list` sees
the runs before it). "Activated" means what `source .venv/bin/activate` does: this interpreter's bin folder first on
PATH, and no PYTHONPATH, so `import pruning_core` and `pruning-core` only work because the package is installed.

A command that cannot run in a test (it starts a server, runs this suite, or downloads) is listed in NOT_RUN with
the reason and a check that stands in for it; a README command that is neither runnable nor listed fails here, and
so does a NOT_RUN entry that no longer matches a README command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import pruning_core as pc
from pruning_core.infra.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README, re.S)
TIMEOUT_S = 300


def bash_commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, trailing `# comments` removed."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = re.sub(r"(^|\s)#.*$", "", line).strip()
        if command:
            commands.append(command)
    return commands


BASH = [command for language, block in BLOCKS if language == "bash" for command in bash_commands(block)]
PYTHON = [block for language, block in BLOCKS if language == "python"]


def activated_env(folder: Path) -> dict[str, str]:
    """The environment after `source .venv/bin/activate`, with a run store and data folder of its own.
    One torch thread: tiny models on a shared 2-core machine only wait for cores with more (see conftest)."""
    bin_dir = Path(sys.executable).parent
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(bin_dir.parent),
               PRUNING_DB=str(folder / "runs.db"), PRUNING_DATA_DIR=str(folder / "data"), OMP_NUM_THREADS="1")
    return env


@pytest.fixture
def outside(tmp_path) -> tuple[Path, dict[str, str]]:
    """A working folder outside the repository, and the activated environment; fails (with the fix) where
    pruning_core is not installed in this interpreter's environment."""
    env = activated_env(tmp_path)
    if shutil.which("pruning-core", path=env["PATH"]) is None:
        pytest.fail(f"`pruning-core` is not in {Path(sys.executable).parent}: the package is not installed in this "
                    "environment; run `make test` (or `pip install -e . --no-deps`)", pytrace=False)
    assert ROOT not in tmp_path.parents
    return tmp_path, env


def run_bash(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


# --- commands that a test cannot run, each with what is checked instead ------------------------------------------

def check_make_target(target: str, expected: str) -> Callable[[str], None]:
    def check(command: str) -> None:
        dry_run = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert dry_run.returncode == 0, dry_run.stderr
        assert expected in dry_run.stdout, dry_run.stdout
    return check


def check_cpu_torch_pins(command: str) -> None:
    """`make run` keeps a torch installed beforehand only if it satisfies requirements.txt: the command's pins
    are the upper pins there (a `+cpu` build of them satisfies them)."""
    upper = dict(re.findall(r"^(torch|torchvision)>=[\d.]+,<=([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M))
    pins = dict(re.findall(r"\b(torch|torchvision)==([\d.]+)", command))
    assert pins == upper and len(pins) == 2, (pins, upper)


def check_cli_parses(command: str) -> None:
    """The command's arguments are accepted by the CLI (parsed, not run), and its `--help` answers."""
    argv = shlex.split(command)[1:]
    build_parser().parse_args(argv)
    env = activated_env(Path("/nonexistent"))
    answer = subprocess.run(["pruning-core", argv[0], "--help"], env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert answer.returncode == 0 and "usage: " in answer.stdout, answer.stderr


def check_streamlit_options(command: str) -> None:
    """Every `--option` of the command is one `streamlit run` knows."""
    answer = subprocess.run([sys.executable, "-m", "streamlit", "run", "--help"], capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert answer.returncode == 0, answer.stderr
    for option in re.findall(r"(--[\w.]+)", command):
        assert option in answer.stdout, f"streamlit run has no {option}"


def check_ray_command(command: str) -> None:
    """A `ray` command of the cluster set-up: its subcommand answers `--help`, and knows every option used."""
    argv = shlex.split(command)
    answer = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", argv[1], "--help"], capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    assert answer.returncode == 0, answer.stderr
    for option in re.findall(r"(--[\w-]+)", command):
        assert option in answer.stdout, f"ray {argv[1]} has no {option}"


def check_token_variables(command: str) -> None:
    """The placeholder token is exported under the names the dashboard's command passes too."""
    names = re.findall(r"(RAY_AUTH_\w+)=", command)
    assert names == ["RAY_AUTH_MODE", "RAY_AUTH_TOKEN"]
    assert all(f"{name}=" in README.split("PRUNING_RAY_ADDRESS=", 1)[1] for name in names)


NOT_RUN: dict[str, tuple[str, Callable[[str], None]]] = {
    "ray get-auth-token --generate": ("writes a cluster secret into the user's ~/.ray", check_ray_command),
    "ray start --head": ("starts a Ray head that would outlive the test", check_ray_command),
    "ray start --address=HEAD_IP": ("joins a cluster at a placeholder address", check_ray_command),
    "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the token>": ("a placeholder for the cluster's secret",
                                                              check_token_variables),
    "pruning-core sweep --methods synflow,snip,magnitude --sparsities 0.9,0.99,0.999 --seeds 0,1,2": (
        "needs a cluster at a placeholder address and downloads CIFAR-10", check_cli_parses),
    "PRUNING_RAY_ADDRESS=HEAD_IP:6379": ("starts the dashboard against a placeholder cluster",
                                         check_streamlit_options),
    "make run": ("starts the dashboard server and never returns", check_make_target("run", "streamlit run app.py")),
    "make test": ("runs this whole suite, this test included", check_make_target("test", "-m pytest")),
    "python3 -m venv .venv && .venv/bin/pip install torch==": (
        "reaches PyTorch's package index, which this machine cannot, and would replace the repository's .venv",
        check_cpu_torch_pins),
    "pruning-core prune --model vgg16 --dataset cifar10": ("downloads CIFAR-10 (170 MB); tests never download",
                                                          check_cli_parses),
    ".venv/bin/python -m streamlit run app.py --server.address 0.0.0.0": (
        "starts a server listening on the local network and never returns", check_streamlit_options),
}


def not_run_entry(command: str) -> str | None:
    matches = [prefix for prefix in NOT_RUN if command.startswith(prefix)]
    assert len(matches) <= 1, matches
    return matches[0] if matches else None


def test_the_readme_has_runnable_examples_of_both_kinds():
    assert PYTHON, "README.md has no ```python block"
    assert [c for c in BASH if not_run_entry(c) is None], "README.md has no runnable ```bash command"


@pytest.mark.parametrize("prefix", list(NOT_RUN))
def test_a_command_not_run_is_in_the_readme_and_checked_instead(prefix):
    commands = [command for command in BASH if command.startswith(prefix)]
    assert len(commands) == 1, f"NOT_RUN entry {prefix!r} should match exactly one README command: {commands}"
    reason, check = NOT_RUN[prefix]
    assert reason
    check(commands[0])


def test_every_bash_command_runs_from_outside_the_repository(outside):
    folder, env = outside
    runnable = [command for command in BASH if not_run_entry(command) is None]
    outputs = {}
    for command in runnable:
        done = run_bash(command, folder, env)
        assert done.returncode == 0, (f"README command failed ({done.returncode}): {command}\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n"
                                      "If it cannot run in a test, list it in NOT_RUN with the reason.")
        outputs[command] = done.stdout
    # What the commands promise, beyond exiting 0.
    for command, stdout in outputs.items():
        argv = shlex.split(command)
        if argv[:2] == ["pruning-core", "train"] and "--json" in argv:
            record = json.loads(stdout)
            assert record["method"] == argv[argv.index("--method") + 1]
            assert record["final_test_accuracy"] is not None
        if argv[:2] == ["pruning-core", "sweep"] and "--csv" in argv:
            table = pd.read_csv(folder / argv[argv.index("--csv") + 1])
            grid = [argv[argv.index(flag) + 1].split(",") for flag in ("--methods", "--sparsities", "--seeds")]
            assert len(table) == len(grid[0]) * len(grid[1]) * len(grid[2]) + len(grid[2])  # + a baseline per seed
        if argv[:3] == ["pruning-core", "runs", "list"]:  # the runs of the commands before, from $PRUNING_DB
            with pc.Store(env["PRUNING_DB"]) as store:
                newest = list(store.list_runs(limit=20)["run_id"])
            assert newest and [int(i) for i in re.findall(r"^\s*(\d+)\s+done\s", stdout, re.M)] == newest, stdout


def layer_counts(stdout: str) -> list[tuple[str, int, int]]:
    """(name, kept, total) from a printed `result.layers` table."""
    return [(name, int(kept), int(total))
            for name, kept, total in re.findall(r"^\d+\s+(\S+\.weight)\s+(\d+)\s+(\d+)\s", stdout, re.M)]


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_a_python_example_runs_outside_the_repository_and_repeats_itself(outside, index, monkeypatch):
    """Run twice, side by side, in two folders: the same pruned layers both times (the model is seeded). The
    README says the seeded API example prunes exactly the network the Prune & train page shows for the same
    settings: the dashboard's path (build_model + prune_with_config) keeps the same weights per layer."""
    folder, _ = outside
    block = PYTHON[index]
    runs = []
    for attempt in ("first", "second"):
        workdir = folder / attempt
        workdir.mkdir()
        (workdir / "example.py").write_text(block)
        runs.append(subprocess.Popen([sys.executable, "example.py"], cwd=workdir, env=activated_env(workdir),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in runs:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == 0, f"README python block {index + 1} failed:\n{stderr[-3000:]}"
        outputs.append(stdout)
    first, second = (layer_counts(stdout) for stdout in outputs)
    assert first == second, "two runs of the README example pruned different weights: is the model seeded?"
    if "result.layers" not in block:
        return
    assert first, outputs[0]

    from pruning_core.infra.runner import prune_with_config

    monkeypatch.setenv("PRUNING_DATA_DIR", str(folder / "data"))
    model, seed = re.search(r'pc\.MODELS\["(\w+)"\]\(.*\bseed=(\d+)\)', block).groups()
    method, sparsity = re.search(r'pc\.prune\(model, method="(\w+)", sparsity=([\d.]+)', block).groups()
    config = pc.RunConfig(dataset="digits", model=model, method=method, sparsity=float(sparsity), seed=int(seed))
    digits = pc.load_dataset("digits")
    dashboard = prune_with_config(pc.build_model(config, digits), config, digits).layers
    assert first == list(zip(dashboard["name"], dashboard["kept"], dashboard["total"]))


def test_only_pruning_core_is_installed_and_the_command_is_its_cli(outside):
    """Installed, not found on a path: importable from any folder, and the installed `pruning-core` entry point
    is the CLI's main (its `--help` answers in check_cli_parses); none of the repository's other top-level
    folders and modules (the dashboard, its pages, the tests, the benchmarks) comes with it."""
    folder, env = outside
    modules = [path.stem for path in ROOT.glob("*.py")] + [path.name for path in ROOT.iterdir() if path.is_dir()]
    others = sorted(name for name in modules if name.isidentifier() and name not in ("pruning_core", "__pycache__"))
    assert {"app", "pages", "tests"} <= set(others)
    probe = ("import importlib.metadata, importlib.util, sys, pruning_core, pruning_core.infra.cli as cli\n"
             "print(pruning_core.__file__)\n"
             "(script,) = importlib.metadata.entry_points(group='console_scripts', name='pruning-core')\n"
             "print(script.load() is cli.main)\n"
             "root, names = sys.argv[1], sys.argv[2:]\n"
             "found = {name: importlib.util.find_spec(name) for name in names}\n"
             "print([name for name, spec in found.items() if spec is not None and any(str(place).startswith(root)"
             " for place in [spec.origin or '', *(spec.submodule_search_locations or [])])])\n")
    done = subprocess.run([sys.executable, "-c", probe, str(ROOT), *others], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    location, is_main, stray = done.stdout.splitlines()
    assert Path(location).resolve() == ROOT / "pruning_core" / "__init__.py"  # editable: the repository's code
    assert is_main == "True"
    assert stray == "[]", f"importable from outside the repository besides pruning_core: {stray}"
