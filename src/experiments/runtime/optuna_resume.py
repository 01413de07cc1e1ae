"""hydra-optuna-sweeper, continued: a study kept in ``hydra.sweeper.storage`` goes on where it
stopped when the same command is started again.

hydra-optuna-sweeper 1.2 loads an existing study (``load_if_exists``) but then runs
``n_trials`` more trials, numbering their job folders from 0 again (over the folders of the
earlier trials). ``hydra_plugins.experiments_sweepers.ResumableOptunaSweeper`` (the Optuna
presets in ``conf/hparams_search/`` select it; Hydra takes sweepers only from the
``hydra_plugins`` package) calls :func:`continue_stored_study` first, which reads the stored
study:

- ``n_trials`` is the study's total: the trials that completed (or were pruned) count;
- a trial left RUNNING by a killed sweep is marked FAIL; it is not run again (Optuna keeps a
  running trial's parameters in memory until it ends, so the storage never got them), the
  sampler proposes a new one instead;
- a seeded sampler's random state is moved on by the trials already there, so it does not
  propose the study's first trials again;
- job folders continue from the study's trial count, so trial N runs in ``<sweep>/N`` and no
  earlier trial's folder is touched.

Without storage (the default, in memory) a study cannot continue; ``resume=auto`` then runs
its sweep again in the same folder, and because the seeded sampler proposes the same trials
in the same order, each finished trial is skipped with its recorded value
(:mod:`experiments.runtime.sweep_resume`).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def continue_stored_study(impl) -> None:
    """Before hydra-optuna-sweeper's ``OptunaSweeperImpl.sweep``: when its study is in storage
    and exists, count the finished trials toward ``n_trials``, queue again the parameters of
    trials left running, and number job folders from the study's trial count (module doc)."""
    if not (impl.storage and impl.study_name):
        return
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    except KeyError:  # no such study yet: a new one
        return
    trials = study.get_trials(deepcopy=False)
    killed = [t for t in trials if t.state == TrialState.RUNNING]
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for trial in killed:  # its parameters never reached the storage: it cannot be re-run
        study.tell(trial.number, state=TrialState.FAIL)
    impl.job_idx = len(trials)  # trial N in job folder N
    impl.n_trials = max(0, int(impl.n_trials) - done)
    advance_sampler(impl.sampler, len(trials))
    log.info(
        "Optuna study %s continues: %d trial(s) done, %d interrupted (marked failed), "
        "%d to run; job folders from %d",
        impl.study_name,
        done,
        len(killed),
        impl.n_trials,
        impl.job_idx,
    )


def advance_sampler(sampler, trials: int) -> None:
    """Move a seeded sampler's random state on by the study's ``trials``, deterministically:
    restarted with its seed it would propose the first trials of the study again."""
    import numpy as np

    for holder in (sampler, getattr(sampler, "_random_sampler", None)):
        rng = getattr(holder, "_rng", None)
        if isinstance(rng, np.random.RandomState):
            base = int(rng.randint(0, 2**31 - 1))
            holder._rng = np.random.RandomState((base + 7919 * trials) % (2**31 - 1))
