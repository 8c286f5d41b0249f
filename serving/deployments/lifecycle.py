"""How a replica that holds engines (a model deployment's, or the ingress's with models placed in
it) is health-checked, drained and ended. Below the deployments, the clients and the app builder,
which all need it."""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

ENGINE_REPLICA_OPTIONS = {"health_check_period_s": 10, "health_check_timeout_s": 30, "graceful_shutdown_timeout_s": 30}
ANSWER_FLUSH_S = 0.5  # a leaving replica's wait, after its last engine call, before it exits


def exit_replica(why: str, shutdown) -> None:
    """End this replica's process now: Ray sees the actor die, routes around it at once, and starts
    a replacement. ``shutdown`` stops the engine processes first, so none outlives the replica."""
    logger.error("%s: this replica exits so that Ray replaces it", why)
    try:
        shutdown()
    finally:
        sys.stderr.flush()
        os._exit(1)
