"""CIDEr-D (Vedantam, Zitnick & Parikh 2015), the captioning metric, computed by the COCO caption evaluation
code (`pycocoevalcap`, its `CiderScorer`: pure Python, offline) on captions we tokenise ourselves.

For each image, each n-gram (n = 1..4) of the candidate and of every reference is weighted by tf-idf, the
idf coming from the references of the whole evaluated set (`log(images / images whose references hold the
n-gram)`). CIDEr-D_n is the mean over the references of the cosine of the candidate's and the reference's
tf-idf vectors, with the candidate's counts clipped to the reference's and a Gaussian length penalty
`exp(-(len_c - len_r)^2 / (2 * 6^2))`; CIDEr-D is 10 x the mean over n, averaged over the images.

Tokens: lowercased words with punctuation removed, as the COCO toolkit's PTB tokenizer leaves them.
The idf depends on the set: one image alone scores 0 (every n-gram of its references has idf 0).
`CiderD` is the same formula with the idf of a fixed set (the training captions), so that a few candidates
can be scored against it, as self-critical training's reward does (Rennie et al. 2017, "CIDEr-D with the
training set's document frequencies").
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from seqlab.errors import ConfigError

_PUNCT = re.compile(r"[^\w\s']|_")


def cider_tokens(text: str) -> str:
    """`A dog, running.` -> `a dog running` (lowercased, punctuation dropped, single spaces)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """CIDEr-D of one candidate per image against that image's references (at least one each).
    Returns (corpus score, score per image), on the usual scale (x 10; a perfect match of a typical
    caption scores a few units)."""
    try:
        from pycocoevalcap.cider.cider_scorer import CiderScorer
    except ImportError:
        raise ConfigError("CIDEr-D needs pycocoevalcap (pip install pycocoevalcap)") from None
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return 0.0, []
    scorer = CiderScorer(n=4, sigma=6.0)
    for hyp, refs in zip(hypotheses, references, strict=True):
        if not refs:
            raise ValueError("every image needs at least one reference")
        scorer += (cider_tokens(hyp), [cider_tokens(r) for r in refs])
    score, scores = scorer.compute_score()
    return float(score), [float(s) for s in scores]


def _ngrams(text: str, n: int = 4) -> Counter:
    """Counts of the 1..n-grams of a tokenised caption (as pycocoevalcap's `precook`)."""
    words = text.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """CIDEr-D with the document frequencies of a fixed set of images' references (one list per image):
    `scores` rates candidates for images of that set against their references, with the same formula as
    `cider_d` (which takes the frequencies from the images it scores): for the same images, the same scores.
    Reference vectors are computed once per image, when first needed."""

    def __init__(self, references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0):
        if not references:
            raise ValueError("CIDEr-D needs at least one image's references")
        self.n, self.sigma = n, sigma
        self.references = [[_ngrams(cider_tokens(r), n) for r in refs] for refs in references]
        self.df: Counter = Counter(g for refs in self.references for g in {g for r in refs for g in r})
        self.log_images = math.log(len(references))
        self._vectors: dict[int, list] = {}

    def _vector(self, counts: Counter) -> tuple[list[dict], list[float], int]:
        """tf-idf weights per n-gram order, their norms, and the length (bigram count, as the COCO code)."""
        vec: list[dict] = [{} for _ in range(self.n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (self.log_images - math.log(max(1.0, self.df[gram])))
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
        return vec, norms, sum(tf for gram, tf in counts.items() if len(gram) == 2)

    def _reference_vectors(self, image: int) -> list:
        if image not in self._vectors:
            self._vectors[image] = [self._vector(r) for r in self.references[image]]
        return self._vectors[image]

    def score(self, hypothesis: str, image: int) -> float:
        """CIDEr-D of one candidate caption (raw text) for image `image` of the set."""
        vec, norms, length = self._vector(_ngrams(cider_tokens(hypothesis), self.n))
        refs = self._reference_vectors(image)
        total = 0.0
        for ref_vec, ref_norms, ref_length in refs:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for k in range(self.n):
                val = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, w in vec[k].items())
                if norms[k] and ref_norms[k]:
                    val /= norms[k] * ref_norms[k]
                total += val * penalty
        return 10.0 * total / self.n / len(refs)

    def scores(self, hypotheses: Sequence[str], images: Sequence[int]) -> list[float]:
        """One score per candidate: hypotheses[i] for image images[i] of the set."""
        return [self.score(h, int(i)) for h, i in zip(hypotheses, images, strict=True)]
