"""`unifybench reproduce SPEC`: a paper table as one suite of runs, planned, launched and rendered.

plan.py      -- a table spec -> runs (method/baseline, preset, benchmark, evaluators with the columns'
                presets); rows without an implementation are "reported only", skipped rows say why.
manifest.py  -- the suite folder's manifest.json (spec, rows, run folders, states) and row states.
launch.py    -- the local launcher (row after row in this process, or one row through torchrun) and
                the Slurm launcher (submitit: one job per row or one job array over rows).
results.py   -- the reproduced table beside the paper's numbers with bootstrap intervals over concepts,
                the ablation plots (matplotlib, PNG + SVG) and the suite's one HTML page.

The runner is reached through one function, `launch.run_row`, which builds a RunSpec and calls
`unifybench.runner.run`; nothing here reaches into the runner's internals.
"""
