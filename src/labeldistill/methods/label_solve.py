"""Kernel label solving (`label-solve`): labels solved in closed form so that kernel ridge
regression from the base images predicts the target set (SPEC 10; the solver is solve.py)."""
from __future__ import annotations

from ..errors import ConfigError
from ..solve import label_solve
from .choose import real_valued
from .direct import direct_method
from .protocol import MethodContext

# Temperatures offered when evaluate.label_temperatures is empty.
SOLVE_TEMPERATURES = (0.1, 0.3, 1.0)


def validate(cfg) -> None:
    sv = cfg.solve
    if sv.num_networks < 1:
        raise ConfigError(f"solve.num_networks must be at least 1, got {sv.num_networks}")
    if sv.target_size is not None and sv.target_size < 1:
        raise ConfigError(f"solve.target_size must be positive, got {sv.target_size}")
    if not (len(sv.ridge_lambdas) >= 1 and all(x > 0 for x in sv.ridge_lambdas)):
        raise ConfigError(f"solve.ridge_lambdas must be one or more positive numbers, got {list(sv.ridge_lambdas)}")


@direct_method("label-solve", title="label solve", order=40, options="solve", validate=validate,
               summary="closed-form labels: kernel ridge regression of the architecture's random features")
def solved_labels(ctx: MethodContext):
    solved, info = label_solve(ctx.cfg, ctx.data, ctx.arch, ctx.progress, ctx.cache)
    temps = ctx.cfg.evaluate.label_temperatures or SOLVE_TEMPERATURES
    candidates = []
    for lam, labels in solved.items():
        candidates += real_valued(ctx.cfg, labels.to(ctx.base_x.device), f"solved (lambda {lam:g})", temps,
                                  {"ridge_lambda": lam})
    return candidates, {"solve": info}
