"""Design-space sweeps (`arasc sweep SPEC.toml`, docs/sweeps.md).

A sweep spec names models, hardware-file fields and compile options with their values or ranges
(spec.py); the sweep is their product, or a random or Latin-hypercube sample of it (points.py).
Every point compiles its program (cached by content hash, cache.py) and times it on the
interpreter-simulator, steady state as `arasc run` reports it (measure.py); points run as tasks
on Ray, locally or on a cluster (runner.py), and each finished point is appended to a CSV table
at once, so a re-run skips what is done (table.py). `--plot` draws the Pareto front and each
swept field's effect (plot.py).

The questions are the ones an architect asks of ARAS (paper section VII varies the Gbuffer in
V-A and the optimizations of V-A..V-C): how many PEs, how large a Gbuffer, which ADC, which
optimizations, for which networks."""
