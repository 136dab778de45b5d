"""Tests of the job suite: specs, storage, the run lifecycle, the report, Celery workers, submit.py."""
