"""Scores for samples: the MNIST classifier, Frechet distance beside the real-vs-real floor, accuracy, legibility."""
