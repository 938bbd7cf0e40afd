"""Library shared by every scenebench job: settings, logging, store, data, models, metrics."""

__version__ = "0.1.0"
