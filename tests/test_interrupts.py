"""Cancels that never land inside an import: an interrupt during an import is held until the import is done
(the module is whole), then raised at the next check; any other interrupt is raised at once."""

from __future__ import annotations

import _thread
import importlib
import signal
import sys
import threading

import pytest

from pruning_core.infra.interrupts import InterruptsOutsideImports, half_imported_modules, importing

SLOW_MODULE = """
import _thread
BEFORE = 1
_thread.interrupt_main()  # what ray.cancel does to a worker, here in the middle of this import
for _ in range(2000):  # the interrupt is delivered between bytecodes: give it plenty of them
    pass
AFTER = 2
"""


@pytest.fixture
def slow_module(tmp_path, monkeypatch):
    name = f"interrupted_mid_import_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_an_interrupt_during_an_import_is_held_until_the_next_check(slow_module):
    with InterruptsOutsideImports() as interrupts:
        module = importlib.import_module(slow_module)
        assert interrupts.pending
        assert (module.BEFORE, module.AFTER) == (1, 2)  # the whole module, not half of it
        assert slow_module not in half_imported_modules()
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_pending()
        assert not interrupts.pending
        interrupts.raise_pending()  # raised once only


def test_a_held_interrupt_is_raised_when_the_block_ends(slow_module):
    with pytest.raises(KeyboardInterrupt):
        with InterruptsOutsideImports():
            importlib.import_module(slow_module)
    assert sys.modules[slow_module].AFTER == 2


def test_without_the_guard_the_same_interrupt_leaves_no_module_behind(slow_module):
    """Why the guard exists: the interrupt stops the import half way."""
    with pytest.raises(KeyboardInterrupt):
        importlib.import_module(slow_module)
    assert slow_module not in sys.modules


def test_an_interrupt_outside_an_import_is_raised_at_once():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with InterruptsOutsideImports():
            _thread.interrupt_main()
            for _ in range(2000):
                pass
            reached.append("after the loop")  # not reached: the interrupt lands inside the loop
    assert reached == []


def test_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    with InterruptsOutsideImports():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_it_changes_nothing():
    seen = []

    def enter():
        before = signal.getsignal(signal.SIGINT)
        with InterruptsOutsideImports() as interrupts:
            seen.append((signal.getsignal(signal.SIGINT) is before, interrupts.pending))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [(True, False)]


def test_importing_reads_the_call_stack():
    assert not importing(sys._getframe())
    assert importing(None) is False


def test_a_module_whose_import_is_under_way_counts_as_half_imported(slow_module, monkeypatch):
    probe = []
    monkeypatch.setattr(_thread, "interrupt_main", lambda: probe.append(half_imported_modules()))
    importlib.import_module(slow_module)
    assert slow_module in probe[0]  # seen from inside its own import
    assert slow_module not in half_imported_modules()
