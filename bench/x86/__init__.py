"""`make bench`: latency, memory, costs and compile times on this (x86) machine."""
