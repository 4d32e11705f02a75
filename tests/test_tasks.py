"""Tests of pruning_core.studies.tasks: the layer-collapse study and its progress messages."""

from __future__ import annotations

from pruning_core.studies.tasks import Task, collapse_study


class RecordingTask(Task):
    def __init__(self):
        super().__init__(key="test")
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
