"""The trial runner: what an agent (or a Kubernetes pod) starts for each allocation.

Run as ``python -m stalwart.exec.run``; see ``stalwart.exec.run`` for what it does.
"""
