"""The process around a compile: progress on stderr, interrupts and cleanup, the output folder."""
