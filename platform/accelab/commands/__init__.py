"""The commands (train, compress, sweep, report, ...): thin drivers over the layers below.

A command module never imports another command module."""
