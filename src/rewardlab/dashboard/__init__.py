"""``rewardlab dashboard``: the run store in a browser (runs, curves, rollouts, evals, comparisons, audits).

``queries`` reads the store into plain dicts, ``downsample`` thins curves, ``app`` serves both as a JSON API
and a small single-page app (``static/``), ``vendor`` fetches its chart library at install time.
"""

from rewardlab.dashboard.app import create_app, serve_dashboard

__all__ = ["create_app", "serve_dashboard"]
