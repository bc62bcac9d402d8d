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


def test_a_given_word_is_one_item_even_with_a_space_in_it():
    """A sample given as its items keeps them as given (a token's text may hold a space):
    the documented reading, which the docs once gave as "their string joined by spaces"."""
    assert unigram_entropy([["a b"]]) == 0.0  # one item
    assert unigram_entropy(["a b"]) == math.log(2)  # a string: its two words
    assert distinct_n([["a b", "a b"]], 1) == 1 / 2
