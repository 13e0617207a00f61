"""The example shop: every pattern in its real role behind FastAPI (see ``app.py``)."""
