"""Pure algorithmic core: no I/O, no model, no files. Unit tested directly."""
