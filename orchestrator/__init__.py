"""orch: run several coding agents at once on one git repository, and measure the coordination."""

__version__ = "0.1.0"
