"""Mini-batch: time to reach within 1% of Lloyd's final inertia, against scikit-learn (issue 23, target 5).

Full size (on a quiet machine):

    .venv/bin/python benchmarks/bench_minibatch.py --cases mnist,blobs --blobs-rows 2000000 --repeats 3 \\
        --max-epochs 20 --partial-max-epochs 5

Smoke test (< 60 s):

    .venv/bin/python benchmarks/bench_minibatch.py --quick

Data: MNIST 70,000 x 784 float32, k=10 (skipped with a message when the IDX files are not found); blobs
``make_blobs(2_000_000, 32, centers=64, random_state=0)`` float32, k=64.  Initial centers, the same for every
run: scikit-learn's ``kmeans_plusplus(X, k, random_state=0)`` (``--init random-rows``: k random rows, seed 0;
on blobs Lloyd then stops in a poor local minimum that mini-batch's reassignments escape, so the target is met
at once).  Reference: scikit-learn's Lloyd from those centers to strict convergence
(``KMeans(init=C0, n_init=1, tol=0, max_iter=300)``); the target is inertia <= 1.01 x its final inertia.
Every inertia here is evaluated the same way (float64, chunked, ``bench_helpers.inertia_of``), outside the
timings.

Both libraries' MiniBatchKMeans get ``init=C0, n_init=1, batch_size=1024, random_state=0`` and their own
reassignment defaults (``reassignment_ratio=0.01``).  Three measurements:

1. ``fit()`` budgets (the headline, the whole call from Python): ``max_iter`` (epochs) in 1, 2, 3, 5, 8, 13, 20 ...
   up to ``--max-epochs``, with ``max_no_improvement=None, tol=0, compute_labels=True`` (both then make one
   labelling pass over the data, inside the call).  The libraries alternate at each budget; each stops at the
   first budget whose centers reach the target, and that budget is then timed ``--repeats`` more times,
   alternating, the best kept.  ``max_iter`` is whole epochs in both libraries, so the time is that of the
   first whole epoch count that reaches the target.
2. ``partial_fit`` loops (step resolution): the benchmark draws the batches (uniform with replacement, seed
   0, the same batches for both) and calls ``partial_fit(X[idx])`` (``compute_labels=False``); the time is the
   cumulative time of the row gather plus the call, and every ``steps per epoch / 8`` steps the inertia of the
   centers is evaluated with the clock stopped.  Up to ``--partial-max-epochs`` epochs (default 5); one run
   each.
3. Default ``fit()`` (early stopping as shipped: ``max_iter=100, max_no_improvement=10``): time (best of
   ``--repeats``, alternating), steps and inertia ratio, whether or not it reaches the target.

"not reached" means the target was not met within the cap (the epochs column says which).
"""
from __future__ import annotations

import argparse

import numpy as np

import bench_helpers as H

BUDGETS = (1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 100)


def budgets(cap):
    return [b for b in BUDGETS if b < cap] + [cap]


def run_case(name, X, k, args, rows):
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.cluster import MiniBatchKMeans as SKMBK
    from sklearn.cluster import kmeans_plusplus

    from kmeans_dist.estimators import MiniBatchKMeans

    n, d = X.shape
    if args.init == "k-means++":
        C0, _ = kmeans_plusplus(X, k, random_state=0)
    else:
        C0 = X[np.random.default_rng(0).choice(n, k, replace=False)]
    C0 = np.ascontiguousarray(C0, dtype=np.float32)
    t_ref, ref_est = H.timed(lambda: SKKMeans(k, init=C0, n_init=1, tol=0.0, max_iter=300).fit(X))
    ref = H.inertia_of(X, ref_est.cluster_centers_)
    target = 1.01 * ref
    print(f"{name}: {n} x {d}, k={k}, init {args.init} (seed 0) at {H.inertia_of(X, C0) / ref:.3f}x the reference; "
          f"reference: scikit-learn Lloyd to strict convergence, {ref_est.n_iter_} iterations, {t_ref:.2f} s, "
          f"inertia {ref:.6g}; target <= {target:.6g}")
    B = args.batch_size
    common = dict(init=C0, n_init=1, batch_size=B, random_state=0)
    libs = {
        "scikit-learn": lambda **kw: SKMBK(k, **common, **kw),
        "ours": lambda **kw: MiniBatchKMeans(k, **common, client=False, **kw),
    }

    # 1. fit() with growing epoch budgets
    found = {}
    for m in budgets(args.max_epochs):
        for lib, make in libs.items():
            if lib in found:
                continue
            est = make(max_iter=m, max_no_improvement=None, tol=0.0).fit(X)
            if H.inertia_of(X, est.cluster_centers_) <= target:
                found[lib] = m
        if len(found) == len(libs):
            break
    res = H.alternate({lib: (lambda r, lib=lib: libs[lib](max_iter=found[lib], max_no_improvement=None,
                                                         tol=0.0).fit(X))
                       for lib in libs if lib in found}, args.repeats, warmup=False)
    fit_t = {}
    for lib in libs:
        if lib not in found:
            rows.append((name, lib, "fit() budgets", "not reached", "", f"> {args.max_epochs}", "", ""))
            continue
        t, est = H.best(res[lib])
        fit_t[lib] = t
        ratio = H.inertia_of(X, est.cluster_centers_) / ref
        rows.append((name, lib, "fit() budgets", f"{t:.3f}", int(est.n_steps_), found[lib], f"{ratio:.4f}", ""))

    # 2. partial_fit loops, batches drawn here, clock stopped for the evaluations
    steps_per_epoch = max(1, n // B)
    every = max(1, steps_per_epoch // 8)
    max_steps = args.partial_max_epochs * steps_per_epoch
    pf_t = {}
    for lib, make in libs.items():
        est = make(compute_labels=False)
        rng = np.random.default_rng(0)
        clock, step, hit = 0.0, 0, None
        while step < max_steps:
            t, _ = H.timed(lambda: est.partial_fit(X[rng.integers(0, n, size=B)]))
            clock += t
            step += 1
            if step % every == 0 or step == max_steps:
                inert = H.inertia_of(X, est.cluster_centers_)
                if inert <= target:
                    hit = inert
                    break
        if hit is None:
            rows.append((name, lib, "partial_fit loop", "not reached", "", f"> {args.partial_max_epochs}", "", ""))
        else:
            pf_t[lib] = clock
            rows.append((name, lib, "partial_fit loop", f"{clock:.3f}", step, f"{step / steps_per_epoch:.2f}",
                         f"{hit / ref:.4f}", ""))

    # 3. the default fit(), early stopping as shipped
    res = H.alternate({lib: (lambda r, make=make: make().fit(X)) for lib, make in libs.items()}, args.repeats,
                      warmup=False)
    def_t = {}
    for lib in libs:
        t, est = H.best(res[lib])
        def_t[lib] = t
        ratio = H.inertia_of(X, est.cluster_centers_) / ref
        mark = "" if ratio <= 1.01 else " (target not reached)"
        rows.append((name, lib, "default fit()", f"{t:.3f}", int(est.n_steps_), f"{est.n_steps_ / steps_per_epoch:.2f}",
                     f"{ratio:.4f}{mark}", ""))

    # the ratios, ours / scikit-learn's, in the last column of ours' rows
    for i in range(len(rows)):
        r = rows[i]
        if r[0] != name or r[1] != "ours":
            continue
        times = {"fit() budgets": fit_t, "partial_fit loop": pf_t, "default fit()": def_t}[r[2]]
        if "ours" in times and "scikit-learn" in times:
            rows[i] = (*r[:-1], f"{times['ours'] / times['scikit-learn']:.2f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="mnist,blobs")
    ap.add_argument("--blobs-rows", type=int, default=2_000_000)
    ap.add_argument("--mnist-rows", type=int, default=None, help="the first rows of MNIST only")
    ap.add_argument("--init", choices=("k-means++", "random-rows"), default="k-means++",
                    help="the initial centers of every run: scikit-learn's kmeans_plusplus or k random rows")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--partial-max-epochs", type=int, default=5, help="cap of the partial_fit loops")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="5,000 MNIST rows, 20,000 blobs rows, 5 epochs, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.blobs_rows, args.mnist_rows, args.max_epochs, args.partial_max_epochs = 20_000, 5_000, 5, 5
        args.repeats = 1
    rows = []
    for name in args.cases.split(","):
        case = H.mnist_case(args.mnist_rows) if name == "mnist" else H.blobs_case(args.blobs_rows)
        if case is None:
            print(f"{name}: data not found (set MNIST_DIR), skipped")
            continue
        run_case(name, *case, args, rows)
    print(f"\ntime to inertia <= 1.01 x Lloyd's (best of {args.repeats} for the fit() rows; the partial_fit rows "
          "are one cumulative run, evaluations excluded):\n")
    H.table(["case", "library", "measured as", "time s", "steps", "epochs", "inertia / Lloyd's",
             "ours / scikit-learn"], rows, right={3, 4, 5, 6, 7})


if __name__ == "__main__":
    main()
