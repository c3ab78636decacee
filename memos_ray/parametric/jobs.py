"""Training jobs, durable: what ``GET /v1/jobs/{id}`` answers survives the Adapters actor's restart.

One table in the relational store (a SQLite file under ``data_dir``, or the PostgreSQL database
``storage.database_uri`` names), held in memory too. A job that was queued or running when its owner
stopped can never finish (its task died with the actor): on open it is marked failed, saying so. Finished
jobs beyond ``kept`` are forgotten, oldest first; unfinished ones never are.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from memos_ray.database import Schema, open_database, upsert
from memos_ray.types import TrainingJob, utcnow

_SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS training_jobs (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, doc TEXT NOT NULL);
""")
_PUT = upsert("training_jobs", ["id", "created_at", "doc"], ["id"])
INTERRUPTED = "interrupted: the service stopped while it was queued or training"


class JobStore:
    def __init__(self, path: Path, kept: int, uri: str | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead."""
        self.kept = kept
        self._db = open_database(path, _SCHEMA, uri)
        rows = self._db.execute("SELECT doc FROM training_jobs ORDER BY created_at, id")
        self.jobs: OrderedDict[str, TrainingJob] = OrderedDict()
        for (doc,) in rows:
            job = TrainingJob.model_validate_json(doc)
            if job.state in ("queued", "running"):
                job = job.model_copy(update={"state": "failed", "error": INTERRUPTED, "finished_at": utcnow()})
                self._write(job)
            self.jobs[job.id] = job

    def get(self, job_id: str) -> TrainingJob | None:
        return self.jobs.get(job_id)

    def __getitem__(self, job_id: str) -> TrainingJob:
        return self.jobs[job_id]

    def put(self, job: TrainingJob) -> list[str]:
        """Durable, then visible; a new job returns the finished jobs forgotten to keep ``kept`` (an update,
        such as a training step's progress, forgets none)."""
        new = job.id not in self.jobs
        self._write(job)
        self.jobs[job.id] = job
        if not new:
            return []
        finished = [j for j, v in self.jobs.items() if v.state in ("succeeded", "failed")]
        forgotten = finished[: max(0, len(self.jobs) - self.kept)]
        if forgotten:
            self._db.executemany("DELETE FROM training_jobs WHERE id = ?", [(j,) for j in forgotten])
            for job_id in forgotten:
                del self.jobs[job_id]
        return forgotten

    def _write(self, job: TrainingJob) -> None:
        self._db.execute(_PUT, (job.id, job.created_at.isoformat(), job.model_dump_json()))

    def close(self) -> None:
        self._db.close()
