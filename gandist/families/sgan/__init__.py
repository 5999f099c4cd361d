"""The semi-supervised GAN (Odena 2016; Salimans et al. 2016): config.py (the `model` and `loss` sections;
`has_classes`), networks.py (G, D with K class logits), objective.py (its phases and the classifier accuracy)."""
