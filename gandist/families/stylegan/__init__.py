"""StyleGAN (Karras et al. 2019): config.py (the `model` section; `grows`), networks.py (mapping and synthesis
networks on gandist/models/growth.py, PGGAN's D). Trains with the shared classic objective."""
