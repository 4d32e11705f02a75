"""Tests of pruning_core.studies.tasks: the layer-collapse study and its progress messages, and studies as runs
of the job queue (their tables stored in the run, their failure kept as a message, their cancel honoured)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pandas as pd
import pytest

from pruning_core.engine.prune import Cancelled
from pruning_core.infra.store import Store
from pruning_core.studies import tasks
from pruning_core.studies.tasks import Progress, collapse_study


class RecordingTask(Progress):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def report(self, message, done, total):
        super().report(message, done, total)
        self.messages.append(message)


def test_collapse_study_names_methods_by_their_labels_and_finds_each_critical_compression():
    task = RecordingTask()
    tables = collapse_study("digits", "mlp", 0, ["magnitude", "synflow"], levels=(1.0,), task=task)
    assert "critical compression of Magnitude" in task.messages
    assert "critical compression of SynFlow" in task.messages
    assert not any("of synflow" in m or "of magnitude" in m for m in task.messages)
    critical = tables["critical"].set_index("method")["log_compression"]
    # SynFlow avoids layer collapse to a far higher compression than magnitude pruning (Tanaka et al. 2020).
    assert critical["synflow"] > critical["magnitude"] > 0
    assert set(tables["densities"]["method"]) == {"magnitude", "synflow"}


def test_result_tables_round_trip_through_the_store_with_their_dtypes():
    df = pd.DataFrame({"step": [0, 10], "grad_norm": [1.5, np.nan], "label": ["Dense", "Sparse"],
                       "kept": [True, False], "updated_at": [1.0, 2.0]})   # a name read_json would take for a date
    back = tasks.decode_table(tasks.encode_table(df))
    pd.testing.assert_frame_equal(back, df)


def test_a_study_in_the_store_keeps_its_tables(tmp_path):
    store = Store(tmp_path / "s.db")
    spec = tasks.collapse_spec("digits", "mlp", 0, ["magnitude"], levels=(1.0, 2.0))
    assert tasks.study_key(spec) == tasks.study_key(dict(reversed(list(spec.items()))))   # order does not matter
    assert tasks.study_key(spec) != tasks.study_key({**spec, "seed": 1})
    run_id = store.create_run(spec, tasks.study_key(spec), kind=tasks.STUDY_KIND, queue=True)
    tasks.run_study(store, run_id)
    record = store.get_run(run_id)
    assert record["status"] == "done"
    tables = tasks.study_tables(record)
    assert set(tables) == {"critical", "densities", "flow"}
    assert sorted(tables["densities"]["log_compression"].unique()) == [1.0, 2.0]
    assert record["progress"]["message"] == "done"


def test_a_failed_study_keeps_its_message_and_not_its_frames(tmp_path):
    store = Store(tmp_path / "s.db")
    held = []

    class Big:
        pass

    def failing(spec, progress, device):
        tensor_like = Big()          # stands for the tensors a failing study holds in its frames
        held.append(weakref.ref(tensor_like))
        raise ValueError("the model cannot take inputs of shape (1, 8, 8)")

    run_id = store.create_run({"study": "collapse"}, "k", kind=tasks.STUDY_KIND, queue=True)
    with pytest.raises(ValueError):
        tasks.run_study(store, run_id, run=failing)
    gc.collect()
    record = store.get_run(run_id)
    assert record["status"] == "failed" and record["error"] == "the model cannot take inputs of shape (1, 8, 8)"
    assert held[0]() is None   # nothing keeps the failed study's frames (and what they hold) alive


def test_a_study_cancelled_in_the_store_stops_at_its_next_progress_point(tmp_path):
    store = Store(tmp_path / "s.db")
    reports = []

    def long_study(spec, progress, device):
        for step in range(100):
            if step == 3:
                store.cancel_run(run_id)   # a viewer presses Cancel
            progress.report(f"step {step}", step, 100)
            reports.append(step)
        return {}

    run_id = store.create_run({"study": "collapse"}, "k", kind=tasks.STUDY_KIND, queue=True)
    with pytest.raises(Cancelled):
        tasks.run_study(store, run_id, run=long_study)
    assert reports == [0, 1, 2] and store.get_run(run_id)["status"] == "cancelled"
