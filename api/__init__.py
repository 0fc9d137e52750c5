"""The oretrace server: settings, embedded database, MongoDB store, ingestion, Starlette app."""
