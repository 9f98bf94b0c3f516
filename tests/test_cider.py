"""CIDEr-D (pycocoevalcap's scorer behind seqlab.tasks.cider) on cases worked out by hand."""

import math

import pytest

from seqlab.tasks.cider import CiderD, cider_d, cider_tokens

pytest.importorskip("pycocoevalcap")


def test_tokens_lowercase_and_drop_punctuation():
    assert cider_tokens("A dog, running.  Fast!") == "a dog running fast"


def test_one_image_scores_zero_every_ngram_has_idf_zero():
    assert cider_d(["a dog runs"], [["a dog runs"]]) == (0.0, [0.0])


def test_two_images_exact_matches_by_hand():
    # Image 1: hyp "a b" == ref "a b"; image 2: hyp "c d" == ref "c d". Every n-gram is in one image's refs
    # of two, so idf = log 2 for all. Unigrams: vec = (log2, log2), cosine 1; bigrams: one n-gram, cosine 1;
    # 3- and 4-grams: empty, 0. Same length: no penalty. CIDEr-D = 10 * (1 + 1 + 0 + 0) / 4 = 5 per image.
    score, per_image = cider_d(["a b", "c d"], [["a b"], ["c d"]])
    assert per_image == pytest.approx([5.0, 5.0])
    assert score == pytest.approx(5.0)


def test_length_penalty_and_clipping_by_hand():
    # Image 1: hyp "a a" vs ref "a b c"; image 2: hyp "x" vs ref "x". idf = log 2 everywhere (w).
    # Unigrams: hyp tf a=2 -> vec (2w); ref (w, w, w). Clipped: min(2w, w) * w = w^2; norms 2w and sqrt(3) w
    # -> cosine 1 / (2 sqrt 3). Bigrams: hyp "a a" vs ref "a b", "b c": 0. The scorer's length counts
    # bigrams: hyp 1, ref 2 -> penalty exp(-1 / 72).
    _, per_image = cider_d(["a a", "x"], [["a b c"], ["x"]])
    expected = 10 * (1 / (2 * math.sqrt(3))) * math.exp(-1 / 72) / 4
    assert per_image[0] == pytest.approx(expected)
    # image 2: unigram cosine 1, no bigrams; lengths 0 and 0
    assert per_image[1] == pytest.approx(10 * 1 / 4)


def test_mean_over_references():
    # refs of image 1: "a b" (exact) and "c d" (nothing shared): the mean over the two references halves it
    _, per_image = cider_d(["a b", "e f"], [["a b", "c d"], ["e f"]])
    # idf: "a","b","a b","c","d","c d" appear in image 1's refs only, "e","f","e f" in image 2's: all log 2
    assert per_image[0] == pytest.approx(5.0 / 2)


def test_empty_hypothesis_scores_zero_and_sizes_must_match():
    assert cider_d(["", "a"], [["a b"], ["a"]])[1][0] == 0.0
    with pytest.raises(ValueError):
        cider_d(["a"], [["a"], ["b"]])


def test_fixed_corpus_scorer_equals_the_coco_scorer_on_its_own_set():
    """CiderD takes its document frequencies from a fixed set; scoring that set's images it gives pycocoevalcap's
    per-image figures, and it uses the set's idf (not the scored images') for a few of them."""
    refs = [["A dog runs on the grass.", "a brown dog running", "The dog is outside on grass"],
            ["Two men play football.", "men playing soccer in a field"],
            ["a child on a swing", "A little girl swings in the park."],
            ["a dog on a swing"]]
    hyps = ["a dog runs on grass", "two men play soccer", "a girl on a swing in the park", "a dog swing"]
    scorer = CiderD(refs)
    assert scorer.scores(hyps, [0, 1, 2, 3]) == pytest.approx(cider_d(hyps, refs)[1], abs=1e-12)
    assert scorer.scores(hyps[:2], [0, 1]) == pytest.approx(cider_d(hyps, refs)[1][:2], abs=1e-12)
    assert cider_d(hyps[:1], refs[:1])[1] == [0.0]  # alone, every n-gram has idf 0; with the set's idf, not
    assert scorer.score(hyps[0], 0) > 1.0
    assert scorer.score("", 0) == 0.0
    with pytest.raises(ValueError):
        CiderD([])
