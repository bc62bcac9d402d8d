"""The diversity metrics on samples already split into words (session 36 of the eval audit)."""

import math

from unmask.evaluate import distinct_n, unigram_entropy


def test_a_sample_given_as_its_words_scores_as_the_string():
    """``[["the", "cat"], ...]`` was int()'s "invalid literal" ValueError."""
    words = [["the", "cat", "the", "dog"], ["the", "cat"]]
    texts = [" ".join(w) for w in words]
    for n in (1, 2):
        assert distinct_n(words, n) == distinct_n(texts, n)
    assert distinct_n(words, 1) == 3 / 6
    assert unigram_entropy([["a", "b"], ["a", "a"]]) == math.log(2) / 2
