"""The `tvae` command line: a click group whose commands import downward only."""
