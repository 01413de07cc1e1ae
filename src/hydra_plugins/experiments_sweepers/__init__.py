"""Hydra plug-ins of this project (Hydra takes a sweeper only from the ``hydra_plugins``
package): :class:`ResumableOptunaSweeper`, hydra-optuna-sweeper's sweeper that continues a
study kept in ``hydra.sweeper.storage`` (:mod:`experiments.runtime.optuna_resume`). Light:
Hydra imports this module at every start."""

from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """``OptunaSweeper`` that first continues its stored study, if any."""

    def sweep(self, arguments: list[str]) -> None:
        from experiments.runtime.optuna_resume import continue_stored_study

        continue_stored_study(self.sweeper)
        return super().sweep(arguments)
