"""mvcompile benchmarks: latency against peers, streaming memory, costs, compile times (`make bench`)."""
