"""Shared test settings.

The pruning-core tests run tiny models, for which torch's intra-op thread pool only adds overhead; on a
2-core machine that is busy with other work, two threads made some prunes ~70x slower (threads waiting
for a core). One thread keeps the suite's run time predictable.
"""

import pytest
import torch

from pruning_core.infra.jobs import JobManager
from pruning_core.infra.store import Store

torch.set_num_threads(1)


@pytest.fixture
def db(tmp_path, monkeypatch):
    """For the dashboard tests: a fresh run store (and so a fresh job manager) per test, and an empty dataset
    folder, so only the embedded digits loads. The job manager is stopped afterwards."""
    path = tmp_path / "runs.db"
    monkeypatch.setenv("PRUNING_DB", str(path))
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path / "data"))
    yield path
    from dashboard import state

    manager = state.manager()
    for run_id in list(manager.tracked()):
        manager.cancel(run_id)
    manager.wait_idle(30)
    manager.shutdown()


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance for the whole session (2 CPUs, Ray's own dashboard off), started by the first
    test that needs the Ray engine: starting Ray takes seconds. address="local": never a cluster that
    `ray start` left running on this machine."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture()
def manager(tmp_path):
    """A job manager with one worker process over a fresh store (the job-queue tests share it)."""
    jobs = JobManager(Store(tmp_path / "jobs.db"), device="cpu", workers=1)
    yield jobs
    jobs.shutdown()
