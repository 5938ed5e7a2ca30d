"""Early stopping fair to the fast end: judged only once the pruning schedule is at its final fraction (every
trial at its own final ratio), reused trainings are no startup trials, and the judged seed is said."""

from __future__ import annotations

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from orchestrator.early_stopping import EarlyStopping, PrunerConfig, judged_from
from orchestrator.trial_watch import TrialWatch
from trainers.progress import PROGRESS_FILE, STOP_FILE, ProgressReporter

TOTAL = 100  # steps; final_fraction 0.2: from step 80 every trial is at its final ratio


def _es(tmp_path, **cfg) -> EarlyStopping:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "studies.journal")))
    return EarlyStopping(storage, "s", PrunerConfig(type="median", n_startup_trials=2, **cfg), final_fraction=0.2,
                         movement=True)


def _curve(es: EarlyStopping, number: int, values: dict[int, float]) -> list[int]:
    twin = es.twin(number)
    stopped = []
    for step, v in values.items():
        if twin.report(step, v, TOTAL):
            stopped.append(step)
            break  # the trial stops here
    if stopped:
        twin.pruned()
    else:
        twin.complete(list(values.values())[-1])
    return stopped


def test_a_high_ratio_trial_is_not_cut_while_its_masks_are_still_growing(tmp_path):
    assert judged_from(TOTAL, 0.2, movement=True) == 80 and judged_from(TOTAL, 0.2, movement=False) == 0
    es = _es(tmp_path)
    # two low-ratio trials: barely damaged mid-schedule
    for number in range(2):
        assert _curve(es, number, {20: 0.85, 50: 0.86, 80: 0.86, 100: 0.87}) == []
    # a high-ratio trial: far behind at steps 20 and 50 (more of it masked so far), level once at its final ratio
    assert _curve(es, 2, {20: 0.30, 50: 0.50, 80: 0.86, 100: 0.87}) == []
    # one that is still far behind at its final ratio is cut, at the first judged step
    assert _curve(es, 3, {20: 0.30, 50: 0.40, 80: 0.40, 100: 0.41}) == [80]


def test_a_trial_that_reused_a_training_is_no_startup_trial(tmp_path):
    es = _es(tmp_path)
    watch = TrialWatch(tmp_path / "t0", es, 0)
    watch.complete(0.9, reused_training_of="trial-3")  # no curve of its own
    first = es.study.get_trials(deepcopy=False)[0]
    assert first.state == TrialState.FAIL and "reused the training of trial-3" in first.user_attrs["not_judged"]
    assert es.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == []


def test_the_watch_judges_from_the_final_fraction_and_says_which_seed(tmp_path):
    es = _es(tmp_path)
    for number in range(2):
        assert _curve(es, number, {80: 0.86, 100: 0.87}) == []
    out = tmp_path / "t2"
    out.mkdir()
    watch = TrialWatch(out, es, 2)
    reporter = ProgressReporter(out, "training", stoppable=True)
    reporter.on_step(1, TOTAL, 0.01)
    reporter.on_eval(50, 0.5, 0.10)  # mid-schedule: not judged, however low
    watch.poll()
    assert not (out / STOP_FILE).exists() and (out / PROGRESS_FILE).exists()
    reporter.on_eval(80, 0.8, 0.10)
    watch.poll()
    assert (out / STOP_FILE).exists()
    assert "step 80 of" in watch.stop_reason and "the first seed's curve" in watch.stop_reason
    assert "from step 80" in watch.stop_reason
