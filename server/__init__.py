"""kombain server: the process, its settings, transports, HTTP API and metrics."""
