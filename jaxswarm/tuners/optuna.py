"""Optuna's samplers as sequential tuners: TPE and GP, define-by-run on the native space.

The space is given to Optuna natively: `Float` -> suggest_float, `Int` ->
suggest_int, `Choice` -> suggest_categorical (log scales kept), and a
conditional parameter is suggested only when its `when` holds, so TPE never
models units of absent layers. The suggested values are encoded back with
`SearchSpace.encode`. GP needs PyTorch.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxswarm.space import Choice, Float, Int, SearchSpace
from jaxswarm.tuners.base import BaselineError, Tuner, worst

__all__ = ["suggest", "TPE", "GP"]


def suggest(trial, space: SearchSpace) -> np.ndarray:
    """Define-by-run: Optuna suggests each active param natively; returns its unit-box position."""
    values, earlier = {}, {}
    for name, p in space.params.items():
        if not p.has_dim:
            if p.is_numeric:
                earlier[name] = p.decode()
            continue
        if p.when is not None and not bool(p.when(earlier)):
            continue
        if isinstance(p, Float):
            v = trial.suggest_float(name, p.lo, p.hi, log=p.log)
        elif isinstance(p, Int):
            v = trial.suggest_int(name, p.lo, p.hi, log=p.log)
        elif isinstance(p, Choice):
            v = trial.suggest_categorical(name, list(p.options))
        else:  # pragma: no cover - no other kinds today
            raise BaselineError(f"parameter {name!r}: unsupported kind {p!r}")
        values[name] = v
        earlier[name] = p.decode(jnp.float32(p.encode(v, name)))
    return space.encode(values)


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
