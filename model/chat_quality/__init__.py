"""The chat quality panel (issue #14): figures a garbled, copied or generic reply cannot pass, each measured
for the model's replies and for the human references of the same contexts.

- tokens.py: how the panel splits text (English words, Chinese characters) and which tokens are content words
- ngram_lm.py: interpolated Kneser-Ney word trigram model, built from the training split in plain Python
- vectors.py: PPMI + truncated SVD word vectors and SIF sentence vectors (Arora et al. 2017)
- panel.py: the figures (disfluent, unseen trigrams, generic, relevance, copying, ...) and the panel they make

Not here: reading files or running a model (model/evaluation.py does both).
"""
