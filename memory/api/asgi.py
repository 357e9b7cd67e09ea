"""ASGI entry point for multi-worker servers (`memory serve --workers N` on PostgreSQL + Qdrant server)."""

from memory.api.app import create_app

app = create_app()
