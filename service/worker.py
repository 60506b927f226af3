"""The embedded job runner: threads in the service process that claim job rows.

Jobs are rows, not memory: a restart finds queued and interrupted jobs and runs them. A job's
lease is renewed while it runs; an expired lease is reclaimed by any worker.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback

from sqlalchemy.engine import Engine

from . import crud
from .db import session_scope
from .pipeline import PERMANENT_ERRORS, Pipeline
from .settings import Settings

logger = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, engine: Engine, pipeline: Pipeline, *, threads: int | None = None):
        self.settings = settings
        self.engine = engine
        self.pipeline = pipeline
        self.threads = settings.workers if threads is None else threads
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        from .webhooks import Dispatcher
        from .wecom import WecomSync

        self.deliveries = Dispatcher(settings, engine)  # webhook outbox → subscribers
        self.wecom = WecomSync(settings, engine, taxonomy=lambda: pipeline.tagger.taxonomy)  # change feed → WeCom

    def start(self) -> None:
        self.deliveries.start()
        self.wecom.start()
        if self.threads == 0:  # accept uploads only: no job runs here
            return
        with session_scope(self.engine) as s:
            n = crud.requeue_running(s)
        if n:
            logger.info("re-queued %d interrupted job(s)", n)
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"earmark-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self.deliveries.stop(timeout)
        self.wecom.stop(timeout)
        self.stop_event.set()
        self.wake.set()
        for t in self._threads:
            t.join(timeout)

    def notify(self) -> None:
        self.wake.set()

    def notify_deliveries(self) -> None:
        """New profile changes were committed: send them now rather than at the next poll."""
        self.deliveries.notify()
        self.wecom.notify()

    def _loop(self) -> None:
        name = f"{os.getpid()}:{threading.current_thread().name}"
        while not self.stop_event.is_set():
            try:
                ran = self.run_one(name)
            except Exception:  # keep the worker alive whatever happens
                logger.exception("worker loop error")
                ran = False
            if not ran:
                self.wake.wait(timeout=2.0)
                self.wake.clear()

    def run_one(self, name: str = "inline") -> bool:
        """Claim and run one job. Returns False when there was nothing to do."""
        s_ = self.settings
        with session_scope(self.engine) as s:
            job = crud.claim_job(s, worker=name, lease_seconds=s_.job_lease_seconds, max_attempts=s_.job_max_attempts)
        if job is None:
            return False

        def heartbeat() -> None:
            with session_scope(self.engine) as s:
                crud.renew_lease(s, job_id=job.id, worker=name, lease_seconds=s_.job_lease_seconds)

        logger.info("job %s: %s %s (attempt %d)", job.id, job.stage, job.recording_id, job.attempts)
        try:
            next_stage = self.pipeline.run(stage=job.stage, recording_id=job.recording_id, heartbeat=heartbeat)
        except Exception as exc:
            permanent = isinstance(exc, PERMANENT_ERRORS) or job.attempts >= s_.job_max_attempts
            reason = f"{job.stage} failed: {exc}"
            logger.warning("job %s %s: %s", job.id, "failed" if permanent else "will retry", reason)
            logger.debug("%s", traceback.format_exc())
            with session_scope(self.engine) as s:
                crud.finish_job(s, job_id=job.id, status="failed" if permanent else "queued", error=reason[:2000])
                if permanent:
                    crud.set_recording_state(s, job.recording_id, status="failed", error=reason[:2000])
            return True
        with session_scope(self.engine) as s:
            crud.finish_job(s, job_id=job.id, status="done")
            if next_stage:
                crud.enqueue(s, tenant_id=job.tenant_id, recording_id=job.recording_id, stage=next_stage)
        self.wake.set()  # a follow-up stage may be waiting
        return True

    def drain(self, name: str = "inline") -> int:
        """Run jobs in this thread until none is left (tests, `earmark process`)."""
        n = 0
        while self.run_one(name):
            n += 1
        return n
