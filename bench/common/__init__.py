"""What both benches use: the cases and their inputs, worker processes, builds through mvcompile.interface,
results folders, and the LiteRT and official-TFLite peers."""
