"""xlinfluence: which languages' training data does a multilingual model learn from?

Fine-tunes a multilingual encoder, computes exact TracIn influence (Pruthi et al. 2020)
of every training example on every test example, and reports language shares in the
style of Choenni, Garrette & Shutova (EMNLP 2023).
"""

__version__ = "0.1.0"
