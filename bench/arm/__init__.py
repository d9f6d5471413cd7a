"""ARM performance without a board: guest instruction counts under qemu-user (see README)."""
