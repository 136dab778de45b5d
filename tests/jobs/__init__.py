"""jobs/submit.py as a user runs it (a real subprocess), and the shipped specs of jobs/specs."""
