"""The `orch` command line: ``main`` runs it; ``app`` holds what commands share; one module per
command group."""

from orchestrator.cli.main import main

__all__ = ["main"]
