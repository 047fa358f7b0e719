"""The grader: evaluates a scenario's checks against Prometheus, logs, traffic and the API,
and renders graded reports (result.json, report.html, report.md, junit.xml)."""
