"""Typed settings: shapes in `config.settings`, reading and validation in `config.loader`."""

from config.loader import ConfigError, iter_documented, load_settings
from config.settings import Settings

__all__ = ["ConfigError", "Settings", "iter_documented", "load_settings"]
