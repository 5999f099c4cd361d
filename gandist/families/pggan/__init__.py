"""PGGAN (Karras et al. 2018): config.py (the `model` section; `grows`), networks.py (G, D growing through
resolutions on gandist/models/growth.py). Trains with the shared classic objective."""
