"""The cluster deployment: instance and Celery settings (YAML), and the one-machine try-out (local.py)."""
