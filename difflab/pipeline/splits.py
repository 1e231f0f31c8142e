"""Which digits each job sees, so that nothing is chosen or scored on the digits it was fitted on.

MNIST's 60,000 training digits split 40,000 / 10,000 / 10,000: `train` (digits 0-39,999: the scoring classifier
and the CPU-default models train here), `held_out` (40,000-49,999: no classifier trains on them; the real side of
every real-vs-real number: the Fréchet floor, the precision / recall and legibility ceilings, the real-trained
classification accuracy score) and `validation` (50,000-59,999: the reference that `bench/` makes its choices
against). `test` is MNIST's 10,000 test digits: the reference for the report's numbers. A smaller training set
(the tests' fake MNIST) splits in the same proportions 4 : 1 : 1, e.g. 300 digits as 200 / 50 / 50.
"""
from __future__ import annotations

MNIST_TRAIN = 60_000
TRAIN, HELD_OUT, VALIDATION, TEST = "train", "held_out", "validation", "test"
SPLITS = (TRAIN, HELD_OUT, VALIDATION, TEST)
REFERENCES = (TEST, VALIDATION)  # the splits generated digits are scored against
CLASSIFIER_DIGITS = MNIST_TRAIN * 4 // 6  # 40,000: the most a classifier may train on (classifier.train_subset)


def train_range(split: str, n_train: int = MNIST_TRAIN) -> range:
    """The indices of a split within a training set of n_train digits (every split but `test`)."""
    bounds = {TRAIN: (0, n_train * 4 // 6), HELD_OUT: (n_train * 4 // 6, n_train * 5 // 6),
              VALIDATION: (n_train * 5 // 6, n_train)}
    if split not in bounds:
        raise ValueError(f"split {split!r}: expected one of {', '.join(bounds)} (the test digits are their own file)")
    return range(*bounds[split])
