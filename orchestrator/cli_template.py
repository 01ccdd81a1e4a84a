from orchestrator.cli import app
