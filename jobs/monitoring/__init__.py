"""Model monitoring and retraining, as pure functions: per-minute metrics, drift (PSI), the promotion policy.

``jobs/monitor.py`` and ``jobs/retrain.py`` are the commands around them (docs/monitoring.md).
"""
