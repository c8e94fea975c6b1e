"""Prefect flows (`pipeline`), schedules (`serve`) and the `healthgym` command line (`cli`): wiring only."""
