"""Pure decisions, no I/O: the layers carry them out."""
