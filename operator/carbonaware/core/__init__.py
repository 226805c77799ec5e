"""The functional core: pure functions on plain data. No I/O, no Kubernetes, no HTTP."""
