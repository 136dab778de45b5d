"""The job suite's processes: study specs, dataset transfer, the run lifecycle, the report, and the
Celery app that queues runs on GPU workers. Only `services.app` and `services.tasks` import Celery."""
