"""One module per pipeline step, each runnable as `python -m jobs.<step>`."""
