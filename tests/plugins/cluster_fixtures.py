"""Fixtures for the Kubernetes tiers (owned by the local-cluster work): `kubeconfig`, ..."""
