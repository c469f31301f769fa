"""The status read model, in one place: what GET /services/{id}/status answers and how it is kept.

- `record.py`: the report's content, assembled from our records and the Prefect run (pure);
- `view.py`: `StatusView`, one per app: the cached record, loads shared by concurrent reads;
- `run_states.py`: the Prefect run states the orchestrator keeps in memory and refreshes.

The caches in memory are cachetools' bounded maps; the shared one is storage/cache.py's read cache
(Redis, invalidated across processes by pub/sub, or in-process under the database change stamp).
"""
