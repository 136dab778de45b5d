"""End to end: the whole pipeline with real parts (trained runs, Celery workers, Flower, submit.py)."""
