"""Fixtures for tests that need a Docker engine (owned by the Docker/node work)."""
