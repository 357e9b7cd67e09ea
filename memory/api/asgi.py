"""ASGI entry point for multi-worker servers (`memory serve --workers N` on PostgreSQL + Qdrant server)."""

from memory import logging_setup
from memory.api.app import create_app
from memory.settings import Settings

# Each worker process configures its own logging (`memory serve` configured only its parent's).
_settings = Settings()
logging_setup.configure(_settings.log_level, _settings.log_json, access_log=_settings.access_log)
app = create_app(_settings)
