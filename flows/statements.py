"""Monthly statements: on the 1st of each month (UTC), one statement per consumer and per provider.

Safe to run again, and to run twice at once: a party's statement for a month and currency is
issued once (the database's unique constraint), so a rerun issues only what is missing. The run's
summary (how many issued, totals per currency) is a markdown artifact on the run in the Prefect UI.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.statements import BatchInput, BatchResult, PeriodInput, fee_percent, issue_batch, plan_statements

BATCH = 200  # parties per task run: a few task runs per month, each retried on its own


@flow(name="issue-statements", retries=0, log_prints=False)
def issue_statements(period: str | None = None, now: datetime | None = None) -> BatchResult:
    """Issue the month's statements (default: the month before now, UTC) that are not issued yet."""
    plan = plan_statements(PeriodInput(period=period, now=now))
    total = BatchResult()
    run_id = flow_run.get_id()
    for start in range(0, len(plan.parties), BATCH):
        chunk = plan.parties[start : start + BATCH]
        done = issue_batch(BatchInput(period=plan.period, parties=chunk, fee_percent=fee_percent(), flow_run_id=run_id))
        total.issued += done.issued
        total.already_issued += done.already_issued
    get_run_logger().info(
        "%s: %d statements issued, %d parties already had theirs", plan.period, len(total.issued), total.already_issued
    )
    _summary(plan.period, total)
    return total


def _summary(period: str, result: BatchResult) -> None:
    """What an operator reads on the run's Artifacts tab."""
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(list)
    for s in result.issued:
        sums[(s.party_type, s.currency)].append(s.total)
    rows = "\n".join(f"| {kind} | {cur} | {len(v)} | {sum(v, Decimal(0))} |" for (kind, cur), v in sorted(sums.items()))
    markdown = (
        f"## Statements for {period}\n\n{len(result.issued)} issued by this run, "
        f"{result.already_issued} parties already had theirs.\n\n"
        f"| party | currency | statements | sum of totals |\n| --- | --- | --- | --- |\n{rows}\n"
    )
    try:
        create_markdown_artifact(markdown=markdown, key=f"statements-{period}", description=f"Statements {period}")
    except Exception as exc:  # the artifact is for reading; the statements are issued either way
        get_run_logger().warning("no summary artifact: %s: %s", type(exc).__name__, exc)
