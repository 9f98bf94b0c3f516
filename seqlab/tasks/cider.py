"""CIDEr-D (Vedantam, Zitnick & Parikh 2015), the captioning metric, computed by the COCO caption evaluation
code (`pycocoevalcap`, its `CiderScorer`: pure Python, offline) on captions we tokenise ourselves.

For each image, each n-gram (n = 1..4) of the candidate and of every reference is weighted by tf-idf, the
idf coming from the references of the whole evaluated set (`log(images / images whose references hold the
n-gram)`). CIDEr-D_n is the mean over the references of the cosine of the candidate's and the reference's
tf-idf vectors, with the candidate's counts clipped to the reference's and a Gaussian length penalty
`exp(-(len_c - len_r)^2 / (2 * 6^2))`; CIDEr-D is 10 x the mean over n, averaged over the images.

Tokens: lowercased words with punctuation removed, as the COCO toolkit's PTB tokenizer leaves them.
The idf depends on the set: one image alone scores 0 (every n-gram of its references has idf 0).
"""

from __future__ import annotations

import re
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
