"""The command line: one module per command group; the only place errors become exit codes."""
