"""The lab harness: runtimes that run the platform, scenarios as data, traffic and faults.

Sees the platform only as operators do (processes or containers, HTTP, Prometheus, logs);
never imports ``cnop``.
"""
