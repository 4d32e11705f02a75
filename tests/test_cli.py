"""The command line: JSON output, the store, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pruning_core as pc
from pruning_core.infra.cli import main
from pruning_core.infra.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def db(tmp_path, monkeypatch):
    path = tmp_path / "cli.db"
    monkeypatch.setenv("PRUNING_DB", str(path))
    return path


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_json_reports_accuracy_and_records_the_run(db, capsys):
    code, out, _ = run_cli(capsys, "train", "--dataset", "digits", "--model", "mlp", "--method", "synflow",
                           "--sparsity", "0.9", "--iterations", "10", "--epochs", "2", "--seed", "0", "--json",
                           "--quiet")
    assert code == 0
    record = json.loads(out)
    assert 0.0 <= record["final_test_accuracy"] <= 1.0
    assert record["config"]["sparsity"] == 0.9 and record["config"]["epochs"] == 2
    assert record["kept"] == round(0.1 * record["total"])
    stored = Store(db).get_run(record["run_id"])
    assert stored["status"] == "done"
    assert stored["summary"]["final_test_accuracy"] == record["final_test_accuracy"]

    code, out, _ = run_cli(capsys, "train", "--dataset", "digits", "--model", "mlp", "--method", "synflow",
                           "--sparsity", "0.9", "--iterations", "10", "--epochs", "2", "--json", "--quiet")
    again = json.loads(out)
    assert again["reused"] and again["run_id"] == record["run_id"]


def test_sparsity_zero_is_the_dense_baseline(db, capsys):
    code, out, _ = run_cli(capsys, "train", "--model", "mlp", "--sparsity", "0", "--epochs", "1", "--json",
                           "--quiet")
    record = json.loads(out)
    assert code == 0 and record["config"]["method"] == pc.DENSE and record["density"] == 1.0


def test_prune_prints_layers_and_collapse(db, capsys):
    code, out, _ = run_cli(capsys, "prune", "--model", "conv", "--method", "magnitude", "--sparsity", "0.999",
                           "--quiet")
    assert code == 0
    assert "conv2.weight" in out and "collapse" in out.lower()


def test_no_store_writes_nothing(db, capsys):
    code, out, _ = run_cli(capsys, "prune", "--model", "mlp", "--method", "random", "--sparsity", "0.5", "--json",
                           "--quiet", "--no-store")
    assert code == 0 and json.loads(out)["run_id"] is None
    assert not db.exists()


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--sparsity", "1.5"], "sparsity"),
    (["train", "--sparsity", "abc"], "--sparsity"),
    (["train", "--method", "nope"], "invalid choice"),
    (["train", "--epochs", "-3"], "epochs"),
    (["train", "--dataset", "imagenet"], "invalid choice"),
    (["sweep", "--sparsities", "0.9,x"], "--sparsities"),
    (["runs", "show"], "needs at least one run id"),
    (["runs", "show", "999"], "999"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_give_one_line_and_exit_2(db, capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0]
    assert out == ""


def test_boolean_flags_are_real_switches(db, capsys):
    code, out, _ = run_cli(capsys, "prune", "--model", "mlp", "--method", "random", "--sparsity", "0.5",
                           "--no-sparse-init", "--json", "--quiet", "--no-store")
    assert json.loads(out)["config"]["sparse_init"] is False
    code, out, _ = run_cli(capsys, "prune", "--model", "mlp", "--method", "random", "--sparsity", "0.5",
                           "--sparse-init", "--json", "--quiet", "--no-store")
    assert json.loads(out)["config"]["sparse_init"] is True
    code, _, err = run_cli(capsys, "prune", "--sparse-init", "false")
    assert code == 2  # never the `type=bool` trap where any string means True


def test_sweep_json_and_csv(db, capsys, tmp_path):
    csv = tmp_path / "table.csv"
    code, out, _ = run_cli(capsys, "sweep", "--model", "mlp", "--methods", "magnitude,random", "--sparsities",
                           "0.5,0.9", "--seeds", "0", "--epochs", "1", "--json", "--quiet", "--csv", str(csv))
    assert code == 0
    cells = json.loads(out)["cells"]
    assert len(cells) == 1 + 2 * 2
    assert {(c["method"], c["sparsity"]) for c in cells} == {
        (pc.DENSE, 0.0), ("magnitude", 0.5), ("magnitude", 0.9), ("random", 0.5), ("random", 0.9)}
    assert csv.read_text().count("\n") == len(cells) + 1


def test_collapse_reports_critical_compression(db, capsys):
    code, out, _ = run_cli(capsys, "collapse", "--model", "mlp", "--methods", "magnitude,random",
                           "--tolerance", "0.25", "--json", "--quiet")
    assert code == 0
    table = {row["method"]: row for row in json.loads(out)["methods"]}
    for row in table.values():
        assert 0.0 <= row["log_compression"] <= 5.0
        assert row["compression"] == pytest.approx(10 ** row["log_compression"])


def test_runs_list_show_export_delete(db, capsys, tmp_path):
    run_cli(capsys, "prune", "--model", "mlp", "--method", "random", "--sparsity", "0.5", "--quiet")
    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    (run,) = json.loads(out)
    code, out, _ = run_cli(capsys, "runs", "show", str(run["run_id"]))
    assert json.loads(out)["config"]["method"] == "random"
    target = tmp_path / "export.json"
    code, out, _ = run_cli(capsys, "runs", "export", str(run["run_id"]), "-o", str(target))
    exported = json.loads(target.read_text())
    assert exported[0]["layers"] and exported[0]["id"] == run["run_id"]
    code, out, _ = run_cli(capsys, "runs", "delete", str(run["run_id"]))
    assert code == 0
    code, out, _ = run_cli(capsys, "runs", "list", "--json")
    assert json.loads(out) == []


def test_module_entry_point_and_help():
    result = subprocess.run([sys.executable, "-m", "pruning_core", "train", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--sparsity", "--method", "--epochs", "--seed", "--json", "--sparse-init"):
        assert flag in result.stdout
    assert pc.help_text("sparsity").split()[0] in result.stdout


def test_collapse_prunes_the_same_seeded_network_as_the_dashboard(db, capsys, monkeypatch):
    import pruning_core.studies.analysis as analysis
    from pruning_core.infra.runner import build_model

    built = []
    real = analysis.critical_compression

    def recording(model_fn, method, data, **kwargs):
        built.append((model_fn(), data))
        return real(model_fn, method, data, **kwargs)

    monkeypatch.setattr(analysis, "critical_compression", recording)
    code, _, _ = run_cli(capsys, "collapse", "--model", "mlp", "--methods", "magnitude", "--seed", "7", "--quiet",
                         "--tolerance", "0.5")
    assert code == 0 and built
    model, data = built[0]
    expected = build_model(pc.RunConfig(model="mlp", seed=7), data).state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())
    other_seed = build_model(pc.RunConfig(model="mlp", seed=8), data).state_dict()
    assert not all(torch.equal(value, other_seed[name]) for name, value in model.state_dict().items())


@pytest.mark.parametrize("command", [["train", "--model", "mlp", "--epochs", "1"], ["prune", "--model", "mlp"],
                                     ["sweep", "--methods", "magnitude", "--sparsities", "0.9", "--epochs", "1"]])
def test_a_device_this_machine_lacks_is_one_error_line(db, capsys, command):
    code, out, err = run_cli(capsys, *command, "--device", "cuda:99", "--quiet")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("error: device 'cuda:99'") and "Traceback" not in err
    assert Store(db).list_runs().empty and Store(db).list_sweeps().empty
