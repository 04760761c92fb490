"""cpt-bench: continual post-training experiments (SFT vs RFT, forgetting matrices)."""

__version__ = "0.1.0"
