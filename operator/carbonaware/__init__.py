"""Carbon-aware scheduling of ML training: wait for a cleaner grid, then train.

Layout (data flows one way: provider -> reading -> log -> policy -> decision -> Job ->
trainer result -> accounting -> status):

- ``carbonaware.core``: pure functions on plain data (policy, forecast, accounting, log).
- ``carbonaware.providers``: HTTP clients for carbon-intensity APIs, replay, fallback chain, cache.
- ``carbonaware.kube``: the kopf operator (handlers) and pure ``build_*`` object builders.
- ``carbonaware.cli``: ``carbonctl`` and ``kubectl-carbon``.
"""

__version__ = "0.1.0"
