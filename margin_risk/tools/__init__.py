"""The tools on top of everything: the command line, health, the desk command, backtest, the
local stand-ins and the demo. Nothing deployed imports this package (import-linter contracts)."""
