"""The launcher measured side by side with every alternative a user could pick (issue 5).

``python -m benchmarks [--quick] [--reps N] [--out docs/benchmarks.md]`` runs every
contender on this machine in one run, interleaved within each repetition, and writes a
Markdown report with the machine, the versions, median and spread of each figure, and
pass/miss for the targets, plus a PNG of start-up time against rank count.

Modules: ``measure`` (running one command with a timeout and proving no process
outlives it), ``workloads`` (the scripts each contender runs), ``contenders`` (who is
measured and how), ``slurm`` (the contenders that need a real Slurm), ``suite``
(the schedule of one run), ``report`` (tables, targets, plot).
"""
