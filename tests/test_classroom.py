"""A classroom server under AppTest (a teacher password set): a student cannot cancel or delete another student's
run or sweep, its owner can, the teacher can; without a password the one user can do everything; every limit
refuses with its message, from a widget and from a link, and nothing is queued."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT
from test_app import texts as escaped_texts

from dashboard import navigation
from pruning_core.config import RunConfig
from pruning_core.infra.store import Store

PASSWORD = "let-me-teach"
ALICE, BOB = "a" * 32, "b" * 32
CONFIG = RunConfig(dataset="digits", model="mlp", method="magnitude", sparsity=0.9, epochs=1).canonical().validate()
LINK = {"dataset": "digits", "model": "mlp", "method": "magnitude", "sparsity": "0.9", "epochs": "1"}


@pytest.fixture
def classroom(db, monkeypatch):
    """A classroom server: the teacher's password is set."""
    monkeypatch.setenv("PRUNING_TEACHER_PASSWORD", PASSWORD)
    return db


def session(page: str, token: str | None, teacher: bool = False, **params) -> AppTest:
    """A browser with this user token (a student; None: a fresh browser) opening a page with a link's parameters."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(navigation.PAGES[page])
    if token is not None:
        at.session_state["_user_token"] = token
    if teacher:
        at.session_state["_teacher"] = True
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def waiting_run(db, owner: str | None, config: RunConfig = CONFIG, sweep_id: int | None = None) -> int:
    """A queued run of `owner` that no worker takes (held by this process), so it stays queued while pages look."""
    store = Store(db)
    run_id = store.create_run(config.to_dict(), config.key(), "train", sweep_id=sweep_id)
    if owner is not None:
        store.set_run_user(run_id, owner, owner[:1].upper())
    return run_id


def done_run(db, owner: str | None, seed: int) -> int:
    store = Store(db)
    config = CONFIG.replace(seed=seed)
    run_id = store.create_run(config.to_dict(), config.key(), "train", status="running")
    store.finish_run(run_id, {"final_test_accuracy": 0.5})
    if owner is not None:
        store.set_run_user(run_id, owner)
    return run_id


def texts(at: AppTest, kind: str) -> list[str]:
    """The page's messages of this kind, as read (markdown escapes removed)."""
    return [t.replace("\\", "") for t in escaped_texts(at, kind)]


def cancel_buttons(at: AppTest) -> list[str]:
    return [b.key for b in at.button if b.key and "cancel" in b.key]


def status(db, run_id: int) -> str:
    return Store(db).get_run(run_id)["status"]


# ---- who may cancel and delete ----------------------------------------------------------------------------
def test_a_student_cannot_cancel_another_students_run_but_its_owner_and_the_teacher_can(classroom):
    run_id = waiting_run(classroom, ALICE)
    bob = session("prune", BOB, run=str(run_id))
    assert not bob.exception
    assert any("queued" in t for t in texts(bob, "info") + texts(bob, "markdown")), "Bob sees Alice's run"
    assert cancel_buttons(bob) == []   # read-only for him
    alice = session("prune", ALICE, run=str(run_id))
    (button,) = [b for b in alice.button if b.key == f"train-cancel-{run_id}"]
    button.click().run()
    assert status(classroom, run_id) == "cancelled"
    other = waiting_run(classroom, ALICE, CONFIG.replace(seed=1))
    teacher = session("prune", BOB, teacher=True, run=str(other))
    teacher.button(key=f"train-cancel-{other}").click().run()
    assert status(classroom, other) == "cancelled"


def test_the_teacher_unlocks_with_the_password_and_a_wrong_one_unlocks_nothing(classroom):
    run_id = waiting_run(classroom, ALICE)
    bob = session("prune", BOB, run=str(run_id))
    bob.text_input(key="classroom-password").input("guess").run()
    bob.button(key="classroom-unlock").click().run()
    assert "That is not the teacher's password." in texts(bob, "error")
    assert cancel_buttons(bob) == []
    bob.text_input(key="classroom-password").input(PASSWORD).run()
    bob.button(key="classroom-unlock").click().run()
    assert f"train-cancel-{run_id}" in cancel_buttons(bob)


def test_a_student_cannot_cancel_another_students_sweep_but_its_owner_and_the_teacher_can(classroom):
    store = Store(classroom)
    cells = [CONFIG.replace(seed=s) for s in range(2)]
    sweep_id = store.create_sweep({"cells": [c.key() for c in cells]}, status="running", queue=True)
    store.set_sweep_user(sweep_id, ALICE, "Alice")
    runs = [waiting_run(classroom, ALICE, c, sweep_id) for c in cells]
    bob = session("compare", BOB, sweep=str(sweep_id))
    assert not bob.exception and f"cancel-sweep-{sweep_id}" not in [b.key for b in bob.button]
    alice = session("compare", ALICE, sweep=str(sweep_id))
    alice.button(key=f"cancel-sweep-{sweep_id}").click().run()
    assert [status(classroom, r) for r in runs] == ["cancelled", "cancelled"]
    second = store.create_sweep({"cells": [CONFIG.replace(seed=5).key()]}, status="running", queue=True)
    store.set_sweep_user(second, ALICE, "Alice")
    cell = waiting_run(classroom, ALICE, CONFIG.replace(seed=5), second)
    teacher = session("compare", BOB, teacher=True, sweep=str(second))
    teacher.button(key=f"cancel-sweep-{second}").click().run()
    assert status(classroom, cell) == "cancelled"


def test_only_the_owner_or_the_teacher_deletes_a_run_and_old_runs_only_the_teacher(classroom):
    alices, old = done_run(classroom, ALICE, seed=1), done_run(classroom, None, seed=2)
    bob = session("runs", BOB)
    bob.multiselect(key="runs-selected").set_value([alices, old]).run()
    assert any("The other 2 selected are someone else's and stay." in t for t in texts(bob, "markdown"))
    bob.button(key="delete-confirm").click().run()
    assert len(Store(classroom).list_runs()) == 2   # neither was his
    alice = session("runs", ALICE)
    alice.multiselect(key="runs-selected").set_value([alices, old]).run()
    alice.button(key="delete-confirm").click().run()
    assert Store(classroom).list_runs()["run_id"].tolist() == [old]   # hers went, the old one stays
    teacher = session("runs", BOB, teacher=True)
    teacher.multiselect(key="runs-selected").set_value([old]).run()
    teacher.button(key="delete-confirm").click().run()
    assert Store(classroom).list_runs().empty


def test_without_a_password_the_one_user_may_do_everything_and_sees_no_classroom(db):
    run_id = waiting_run(db, ALICE)
    old = done_run(db, None, seed=3)
    me = session("prune", None, run=str(run_id))
    assert "classroom-password" not in [t.key for t in me.text_input]   # no prompt, no name field
    assert "Classroom" not in " ".join(texts(me, "markdown"))
    me.button(key=f"train-cancel-{run_id}").click().run()
    assert status(db, run_id) == "cancelled"
    runs = session("runs", None)
    runs.multiselect(key="runs-selected").set_value([old, run_id]).run()
    runs.button(key="delete-confirm").click().run()
    assert Store(db).list_runs().empty


def test_runs_record_the_student_who_started_them(classroom):
    alice = session("prune", ALICE, **LINK)
    alice.sidebar.text_input(key="classroom-name").input("Alice L.").run()
    alice.button(key="train").click().run()
    (run,) = Store(classroom).list_runs().itertuples()
    assert (run.user_token, run.user_name) == (ALICE, "Alice L.")
    queue = session("classroom", BOB)
    assert not queue.exception
    shown = queue.dataframe[0].value
    assert shown["by"].tolist() == ["Alice L."] and ALICE not in shown.to_string()


# ---- limits ---------------------------------------------------------------------------------------------------
def refusal(at: AppTest) -> str:
    (message,) = [t for t in texts(at, "error") if "Above this server's limit" in t]
    return message


@pytest.mark.parametrize("param, value, limit", [
    ("epochs", "100000", "max_epochs"),
    ("iterations", "5000", "max_rounds"),
    ("model", "vgg16", "max_cpu_model_weights"),
])
def test_a_link_above_a_limit_is_refused_with_its_message_and_nothing_is_queued_or_computed(classroom, param,
                                                                                           value, limit):
    at = session("prune", ALICE, **{**LINK, "method": "magnitude", param: value})
    message = refusal(at)
    assert f"limit {limit}" in message and "teacher can raise it" in message
    assert not at.get("plotly_chart")            # nothing pruned in the page
    assert "train" not in [b.key for b in at.button]
    assert Store(classroom).list_runs().empty


@pytest.mark.parametrize("change, limit", [
    (lambda at: at.number_input(key="epochs").set_value(6), "max_epochs"),
    (lambda at: at.number_input(key="iterations").set_value(7), "max_rounds"),
    (lambda at: at.selectbox(key="model").set_value("vgg16"), "max_cpu_model_weights"),
])
def test_a_widget_above_a_limit_is_refused_like_a_link(classroom, monkeypatch, change, limit):
    monkeypatch.setenv("PRUNING_MAX_EPOCHS", "5")
    monkeypatch.setenv("PRUNING_MAX_ROUNDS", "6")
    at = session("prune", ALICE, **LINK)
    assert not texts(at, "error")
    change(at).run()
    message = refusal(at)
    assert f"(limit {limit})" in message and "teacher can raise it" in message
    assert not at.get("plotly_chart") and "train" not in [b.key for b in at.button]
    assert Store(classroom).list_runs().empty


@pytest.mark.parametrize("params, limit", [
    ({"seeds": "3", "methods": ["magnitude", "random"], "sparsities": ["0.5", "0.9"]}, "max_sweep_cells"),
    ({"seeds": "4", "methods": ["magnitude"], "sparsities": ["0.5"]}, "max_seeds"),
])
def test_a_sweep_above_a_limit_is_refused_and_nothing_is_queued(classroom, monkeypatch, params, limit):
    monkeypatch.setenv("PRUNING_MAX_SWEEP_CELLS", "10")
    at = session("compare", ALICE, dataset="digits", model="mlp", epochs="1", **params)
    at.button(key="run-sweep").click().run()
    message = " ".join(texts(at, "error"))
    assert f"limit {limit}" in message and "teacher can raise it" in message
    assert Store(classroom).list_runs().empty and Store(classroom).list_sweeps().empty


def test_the_queue_limits_per_student_and_in_total_refuse_a_new_run(classroom, monkeypatch):
    monkeypatch.setenv("PRUNING_MAX_QUEUED_PER_USER", "1")
    waiting_run(classroom, ALICE, CONFIG.replace(seed=7))
    alice = session("prune", ALICE, **LINK)
    alice.button(key="train").click().run()
    assert "limit max_queued_per_user" in " ".join(texts(alice, "error"))
    assert len(Store(classroom).list_runs()) == 1
    monkeypatch.setenv("PRUNING_MAX_QUEUED", "1")
    bob = session("prune", BOB, **LINK)
    bob.button(key="train").click().run()
    assert "limit max_queued)" in " ".join(texts(bob, "error"))
    assert len(Store(classroom).list_runs()) == 1


def test_the_teacher_changes_a_limit_while_the_server_runs(classroom):
    teacher = session("classroom", BOB, teacher=True)
    assert not teacher.exception
    teacher.number_input(key="limit-max_epochs").set_value(2)
    teacher.button(key="FormSubmitter:classroom-limits-form-Save the limits").click().run()
    student = session("prune", ALICE, **{**LINK, "epochs": "3"})
    assert "at most 2 (limit max_epochs)" in refusal(student)


def test_the_teacher_pauses_resumes_and_clears_the_queue_and_cancels_anyones_run(classroom):
    alices, bobs = waiting_run(classroom, ALICE), waiting_run(classroom, BOB, CONFIG.replace(seed=1))
    student = session("classroom", BOB)
    assert not student.exception
    assert not {"classroom-pause", "classroom-clear", "classroom-cancel"} & {b.key for b in student.button}
    teacher = session("classroom", None, teacher=True)
    teacher.button(key="classroom-pause").click().run()
    assert Store(classroom).queue_paused()
    assert any("The queue is paused" in t for t in texts(session("classroom", BOB), "warning"))
    teacher.button(key="classroom-resume").click().run()
    assert not Store(classroom).queue_paused()
    teacher.multiselect(key="classroom-cancel-ids").set_value([alices]).run()
    teacher.button(key="classroom-cancel").click().run()
    assert status(classroom, alices) == "cancelled"
    teacher.button(key="classroom-clear").click().run()
    assert status(classroom, bobs) == "cancelled"


# ---- lesson links ---------------------------------------------------------------------------------------------
def test_a_lesson_link_locks_and_hides_the_chosen_controls_and_keeps_them_in_the_url(db):
    at = session("prune", None, **LINK, lock=["method", "model"], hide="seed,epochs")
    assert not at.exception
    assert at.selectbox(key="method").disabled and at.selectbox(key="model").disabled
    assert not at.selectbox(key="dataset").disabled
    assert {"seed", "epochs"}.isdisjoint(n.key for n in at.number_input)
    assert at.query_params["lock"] == ["method", "model"]
    assert at.query_params["hide"] in ("seed,epochs", ["seed,epochs"])
    assert "Train 1 epoch" in [b.label for b in at.button]   # the hidden epochs are the link's
    assert not [b.key for b in at.button if b.key and b.key.startswith("preset-")]   # no preset to escape the lock


def test_a_lesson_link_locks_or_hides_the_sparsity_slider_and_compare_with(db):
    at = session("prune", None, **{**LINK, "sparsity": "0.999"}, lock="sparsity")
    assert not at.exception
    assert at.slider(key="compression").disabled and at.slider(key="compression").value == 3.0
    at = session("prune", None, **LINK, compare=["random"], lock="compare")
    assert at.multiselect(key="compare").disabled and at.multiselect(key="compare").value == ["random"]
    at = session("prune", None, **LINK, compare=["random"], hide="compare")
    assert "compare" not in [m.key for m in at.multiselect]
    assert at.button(key="train-compare").label == "Train Random too"   # the hidden choice still holds
    at = session("sanity", None, **{**LINK, "sparsity": "0.99"}, hide="sparsity")
    assert not at.exception
    assert "sc-compression" not in [s.key for s in at.slider]
    assert at.session_state["sc-compression"] == 2.0   # the hidden slider's value is the link's
    assert at.query_params["sparsity"] in ("0.99", ["0.99"])


def test_the_teacher_builds_a_lesson_link_from_the_page_as_it_stands(classroom):
    student = session("prune", ALICE, **LINK)
    assert "lesson-lock" not in [m.key for m in student.multiselect]
    teacher = session("prune", None, teacher=True, **LINK)
    teacher.multiselect(key="lesson-lock").set_value(["method", "model"]).run()
    teacher.multiselect(key="lesson-hide").set_value(["seed"]).run()
    (link,) = [c.value for c in teacher.code if "lock=" in c.value]
    assert "method=magnitude" in link and "lock=method&lock=model" in link and "hide=seed" in link


def test_a_lesson_link_that_leaves_the_answer_out_shows_the_stored_run_only_after_train(db):
    store = Store(db)
    run_id = store.create_run(CONFIG.to_dict(), CONFIG.key(), "train", status="running")
    store.finish_run(run_id, {"final_test_accuracy": 0.5})
    answer = session("prune", None, **LINK)
    assert "train" not in [b.key for b in answer.button]   # a plain link shows the stored run at once
    lesson = session("prune", None, **LINK, answer="hide")
    assert not lesson.exception
    lesson.button(key="train").click().run()
    assert not lesson.exception and "train" not in [b.key for b in lesson.button]
    assert any("Reused from the store" in t for t in texts(lesson, "success"))
    assert store.list_runs()["run_id"].tolist() == [run_id]   # reused, not trained again
    assert lesson.query_params["answer"] in ("hide", ["hide"])
