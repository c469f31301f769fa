"""How the flows are deployed and run: work pool, worker and the local stack."""
