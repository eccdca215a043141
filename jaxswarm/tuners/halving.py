"""Optuna's TPE with a pruner: successive halving and Hyperband, one epoch a rung step.

Each trial is sampled by TPE on the native space (`strategies.suggest`, as the
plain "tpe" tuner) and trained dense at its real size, one epoch at a time
(`base.Evaluator` with ``prune=``). After every epoch but the last the trial
reports its fitness so far (validation accuracy, or minus the loss with
``fitness="loss"``; a diverged run reports `base.worst`) with
``trial.report(value, epochs_trained)`` and asks ``trial.should_prune()``; a
pruned trial stops training there and is told ``TrialState.PRUNED``. The step
is the number of epochs trained, so ``min_epochs`` is the epochs of the first
rung.

Pruner settings (options of both tuners):

  eta         reduction factor, an integer >= 2 (default 3): a rung keeps the
              top 1/eta of the trials that reached it.
  min_epochs  Optuna's ``min_resource``, 1 .. epochs (default 1): rung k is at
              ``min_epochs * eta**k`` epochs.
  sampler_kwargs  extra `optuna.samplers.TPESampler` arguments (seed: the run's).

  tpe_sha        ``SuccessiveHalvingPruner(min_resource=min_epochs,
                 reduction_factor=eta, min_early_stopping_rate=0,
                 bootstrap_count=0)``; the last rung is the study's epochs.
  tpe_hyperband  ``HyperbandPruner(min_resource=min_epochs,
                 max_resource=epochs, reduction_factor=eta)``: floor(log_eta(
                 epochs / min_epochs)) + 1 brackets; a trial's bracket comes from
                 the study name (fixed here, so a seed repeats) and trial number.

A pruned evaluation's row (evaluations.jsonl) has ``pruned: true``, ``epochs``
the epochs it trained (< the study's) and the fitness, accuracies and loss
after that epoch; it counts as one evaluation of the budget and is never the
best configuration (`base.Evaluator`). Successive halving: Jamieson &
Talwalkar 2016 (asynchronous form: Li et al. 2020, ASHA); Hyperband: Li et
al. 2018, JMLR 18(185).
"""

from __future__ import annotations

from jaxswarm.strategies import suggest
from jaxswarm.tuners.base import BaselineError, Tuner, worst

__all__ = ["SHA", "HYPERBAND"]

OPTIONS = ("eta", "min_epochs", "sampler_kwargs")


def _check(name: str, eta, min_epochs, epochs: int) -> None:
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise BaselineError(f"{name}: eta (the reduction factor) must be an integer >= 2, got {eta!r}")
    if isinstance(min_epochs, bool) or not isinstance(min_epochs, int) or not 1 <= min_epochs <= epochs:
        raise BaselineError(f"{name}: min_epochs must be an integer in 1..{epochs} (the epochs), got {min_epochs!r}")


def _run_pruned(name: str, make_pruner):
    """The tuner's ``run``; ``make_pruner(optuna, eta, min_epochs, epochs)`` builds its pruner."""

    def run(ev, space, seed, budget, eta: int = 3, min_epochs: int = 1, sampler_kwargs: dict | None = None):
        _check(name, eta, min_epochs, ev.epochs)
        import optuna  # optional: the bench / dev extras

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = make_pruner(optuna, eta, min_epochs, ev.epochs)
        sampler = optuna.samplers.TPESampler(**{"seed": seed, **(sampler_kwargs or {})})
        # A fixed name: Hyperband picks a trial's bracket from a hash of the study name.
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner,
                                    study_name=f"jaxswarm-{name}")
        while True:
            ev.check()
            trial = study.ask()

            def prune(epochs, fitness):
                trial.report(worst(fitness), epochs)
                return trial.should_prune()

            fitness = ev(suggest(trial, space), prune=prune)
            if ev.trials[-1].pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # value: the last report
            else:
                study.tell(trial, worst(fitness))

    return run


def _sha(optuna, eta, min_epochs, epochs):
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=eta)


def _hyperband(optuna, eta, min_epochs, epochs):
    return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs, reduction_factor=eta)


SHA = Tuner("tpe_sha", _run_pruned("tpe_sha", _sha), OPTIONS, ("optuna",),
            "Optuna's TPESampler + SuccessiveHalvingPruner, one epoch a step (eta, min_epochs)")
HYPERBAND = Tuner("tpe_hyperband", _run_pruned("tpe_hyperband", _hyperband), OPTIONS, ("optuna",),
                  "Optuna's TPESampler + HyperbandPruner, one epoch a step (eta, min_epochs)")
