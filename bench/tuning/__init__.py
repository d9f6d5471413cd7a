"""Tuning benches: does tuning pay off (bench_tuning), and do instruction counts tune as well as time (tune_check)."""
