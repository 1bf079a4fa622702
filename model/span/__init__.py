"""The boundary-pointer reader for reading comprehension: words in, a passage span out.

text.py (words with character offsets, normalisation), vocab.py (the word table and GloVe rows),
features.py (question-match features and tensors), network.py (the model), search.py (best spans within a
length cap), predictor.py (the serving interface shared with model.inference.Predictor), train.py (CPU training).
"""
