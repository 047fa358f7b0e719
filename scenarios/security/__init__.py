"""The security track's scanners: ``lab scan`` and ``lab selftest --security``.

- :mod:`.target`: the users a scan acts as, and where its requests leave from;
- :mod:`.fuzz`: schemathesis on the published API description (offline);
- :mod:`.wapiti`: wapiti on the same description, from its own tool virtualenv (offline);
- :mod:`.zap`: OWASP ZAP's packaged scans in Docker (``ZAP_IMAGE``);
- :mod:`.probes`: the lab's targeted probes for what no scanner sees (BOLA, alg none, ...);
- :mod:`.scan`: one graded scan; :mod:`.selftest`: proof that the scans find each flaw.

Every engine's report becomes :class:`grader.findings.Finding` objects; grading and reports are
the grader's (one check per OWASP API Security Top 10 (2023) category).
"""
