"""The tests mirror the code: tests/colormamba/X.py tests colormamba/X.py (and tests/colormamba/ops/ the
package colormamba/ops/, ...), tests/services/test_X.py tests services/X.py; tests/jobs/ tests
jobs/submit.py's command line and jobs/specs, tests/containers/ the images and compose files,
tests/benchmarks/ the benchmark scripts; tests/e2e/ runs the whole pipeline (trained runs, Celery workers,
Flower). Shared fixtures are in tests/conftest.py, shared helpers in tests/support/; no test module
imports another."""
