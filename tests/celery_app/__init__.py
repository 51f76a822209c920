"""Support for the transport's tests: broker URLs, and the Celery app the worker tests run."""
