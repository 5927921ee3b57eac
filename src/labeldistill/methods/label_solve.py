"""Kernel label solving (`label-solve`): labels solved in closed form so that kernel ridge
regression from the base images predicts the target set (SPEC 10; the solver is solve.py)."""
from __future__ import annotations

from ..solve import label_solve
from .choose import real_valued
from .direct import direct_method
from .protocol import MethodContext

# Temperatures offered when evaluate.label_temperatures is empty.
SOLVE_TEMPERATURES = (0.1, 0.3, 1.0)


@direct_method("label-solve", title="label solve", order=40, options="solve",
               summary="closed-form labels: kernel ridge regression of the architecture's random features")
def solved_labels(ctx: MethodContext):
    solved, info = label_solve(ctx.cfg, ctx.data, ctx.arch, ctx.progress)
    temps = ctx.cfg.evaluate.label_temperatures or SOLVE_TEMPERATURES
    candidates = []
    for lam, labels in solved.items():
        candidates += real_valued(ctx.cfg, labels.to(ctx.base_x.device), f"solved (lambda {lam:g})", temps,
                                  {"ridge_lambda": lam})
    return candidates, {"solve": info}
