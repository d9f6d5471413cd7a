"""The on-disk artifact format (file names, manifest schema, signing and checks): written by the
backend, read by the runtime; it imports nothing from the compiler side."""
