"""Learning rates of the flexibility evaluation: true-label LeNet models on 100 real MNIST digits,
each optimiser at a few rates, test accuracy after 100/300/1000 steps (2 models, 2,000 test images).

PYTHONPATH=src python scripts/check_optimizer_lrs.py  (reads /work/shared/data; about 15 min on 2 busy cores)
"""
import sys, time
DATA = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data"
from labeldistill import config as C
from labeldistill.data import prepare
from labeldistill.evaluate import Recipe, train_and_evaluate
from labeldistill.labels import one_hot
cfg = C.validate(C.apply(C.Config(), {"method": "baseline", "data.num_base_examples": 100, "data.root": DATA}))
d = prepare(cfg, "cpu", root=DATA)
lab = one_hot(d.base_original_labels, 10)
grid = {"sgd": [0.01, 0.03, 0.1, 0.3], "momentum": [0.003, 0.01, 0.03], "adam": [3e-4, 1e-3, 3e-3]}
for head in ("linear", "rr"):
  for opt, lrs in grid.items():
    for lr in lrs:
        t = time.time()
        r = train_and_evaluate(Recipe("lenet", head=head, optimizer=opt, lr=lr, batch_size=50), d.base_x, lab, [1, 2], 1000,
                               d.test_x[:2000], d.test_y[:2000], eval_steps=[100, 300, 1000])
        acc = (100 - r.errors.mean(1)).tolist()
        print(f"{head:6} {opt:9} lr {lr:<7g} acc@100/300/1000 " + " / ".join(f"{a:.1f}" for a in acc), f"({time.time()-t:.0f}s)", flush=True)
