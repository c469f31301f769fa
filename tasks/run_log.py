"""The run's log in the Prefect UI: each phase's line (rendered by `checks.phase_lines`) written
to the flow or task run's logger, which ships it to the Prefect server with the batches it sends anyway."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from checks.phase_lines import failed_groups, phase_lines
from core.domain import PhaseOutcome
from core.logging import request_id_of_tags


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow or task run's logger (shown in the UI); a plain logger outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("marketplace.pipeline")


def log_phases(outcomes: Sequence[PhaseOutcome]) -> None:
    """Write each phase's line to the run's log: a failed phase as a warning."""
    logger = run_logger()
    for line, group_failed in zip(phase_lines(outcomes), failed_groups(outcomes), strict=True):
        logger.log(logging.WARNING if group_failed else logging.INFO, line)


def log_origin(what: str) -> None:
    """The run's first line in the UI: what it does and the request that asked for it (its X-Request-ID,
    also the run's `request:<id>` tag), to go from an API or gateway log line to this run and back."""
    from prefect.runtime import flow_run

    request_id = request_id_of_tags(flow_run.get_tags())
    if request_id is not None:  # runs started by a schedule or an automation have none
        run_logger().info("%s for request %s", what, request_id)
