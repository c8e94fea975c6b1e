"""Training: the loop in small steps (`loop`), EMA, checkpoints, the choice of checkpoint and its
memorisation probe, and DP-SGD (`dp`) and data parallelism (`parallel`) as strategies the loop calls.
"""
