"""Pure checks without Prefect: spec schema, metadata, OpenAPI, policies, endpoint probes, report text.

The API and the Prefect tasks both call them; `tasks/` adds the retries and timeouts. Nothing here
imports Prefect or `tasks/` (tests/checks/test_layering.py holds that line).
"""
