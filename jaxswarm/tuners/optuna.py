"""Optuna's samplers as sequential tuners: TPE and GP, define-by-run on the native space.

The space is given to Optuna natively (`strategies.suggest`: log scales kept,
a conditional parameter suggested only when its `when` holds, so TPE never
models units of absent layers). GP needs PyTorch. The batched counterparts,
S trials a round trained as one swarm, are the study's Optuna strategies
(`strategies.STRATEGIES`).
"""

from __future__ import annotations

from jaxswarm.strategies import suggest
from jaxswarm.tuners.base import Tuner, worst

__all__ = ["TPE", "GP"]


def _run_optuna(sampler_name):
    def run(ev, space, seed, budget, sampler_kwargs: dict | None = None):
        import optuna  # optional: the bench / dev extras

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        kw = {"seed": seed, **(sampler_kwargs or {})}
        sampler = (optuna.samplers.TPESampler(**kw) if sampler_name == "tpe"
                   else optuna.samplers.GPSampler(**kw))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        while True:
            ev.check()
            trial = study.ask()
            u = suggest(trial, space)
            study.tell(trial, worst(ev(u)))

    return run


TPE = Tuner("tpe", _run_optuna("tpe"), ("sampler_kwargs",), ("optuna",), "Optuna's TPESampler")
GP = Tuner("gp", _run_optuna("gp"), ("sampler_kwargs",), ("optuna", "torch"), "Optuna's GPSampler (needs PyTorch)")
