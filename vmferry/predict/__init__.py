"""Workload profiles, migration prediction, strategy choice and right-sizing (pure code).

``model`` (the pre-copy round model and its calibration), ``strategy`` (which way to move a
VM), ``rightsize`` (p95-based vCPU and memory recommendations) and ``profile`` (workload
samples and their summary) import only :mod:`vmferry.model` and
:mod:`vmferry.engine.convergence`; the side effects are in :mod:`vmferry.service.profile`
and :mod:`vmferry.service.predict`.
"""
