"""The inbox: webhooks from platforms, verified and stored once on the request path
(``service``), then handled in jobs, one sender at a time and in order (``handlers``).
"""
