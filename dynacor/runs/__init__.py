"""Runs on disk and in the background: `request` (the one path from a request to a run), `store`
(the run directory contract), `jobs` (a run in a worker thread), `baseline` (a baseline written as
a run), `view` and `umap_map` (what the app shows), `bench` (the benchmark grid)."""
