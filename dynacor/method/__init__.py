"""The algorithm (METHOD.md), as pure functions on arrays and tensors, and the thin objects on top.

Read in this order: `noise` (synthetic noise for benchmarks), `corruption` (the corrupted copies),
`classifier` / `scratch` (training and recording margins; `nets` holds what networks share),
`dynamics` (margins to the encoder's input), `encoder` and `clustering` (representations, the two
clusters, the validation metric), `metrics`. `config` holds every default, `validate` checks
user input once, `pipeline.run(config, data, on_event) -> Result` runs it all, `estimator` is
the scikit-learn face. Nothing here reads or writes files.
"""
