"""Autotuning with MetaSchedule: the search (`tune`), its JSON databases (`tuning_db`), the records a
build applies (`tuned_records`), measuring locally, over RPC (`ms_setup`) or by instruction counts under
qemu (`emulated_runner`)."""
