"""Build an index from entries, calibrate its thresholds, publish it atomically."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from . import calibration
from .entries import Entry
from .index import DEFAULT_THRESHOLDS, KnowledgeIndex
from .publish import new_build_dir, publish
from .text import SHOP_DICT_DIR

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    entries: int
    thresholds: Dict
    build_dir: Path
    seconds: Dict[str, float] = field(default_factory=dict)


# the held-out copy of a large index is built from a sample of this many entries: calibration then
# costs a bounded extra build instead of a second full one (thresholds drawn from a smaller index are
# slightly optimistic about distractors; the labelled and out-of-scope probes use the full index)
CALIBRATION_SAMPLE = 5_000


def calibrate(index: KnowledgeIndex, entries: Sequence[Entry], labelled: Sequence[Tuple[str, Optional[str]]] = (),
              dict_dir: Optional[Path] = SHOP_DICT_DIR, sample: int = CALIBRATION_SAMPLE) -> Dict:
    """Fit the scorer and choose thresholds; fall back to the defaults when the data is too thin."""
    if len(entries) > sample:
        entries = random.Random(7).sample(list(entries), sample)
    kept, held_out = calibration.holdout_split(entries)
    probes = calibration.probe(index, calibration.out_of_scope_queries()) + calibration.probe(index, labelled)
    if held_out:
        holdout_index = KnowledgeIndex.build(kept, dict_dir=dict_dir, config=index.config)
        probes += calibration.probe(holdout_index, held_out, held_out=True)
    try:
        scorer, observations = calibration.fit_scorer(probes)
        thresholds = calibration.choose_thresholds(observations)
    except ValueError as exc:
        logger.warning("not calibrated (%s): using default thresholds", exc)
        return dict(DEFAULT_THRESHOLDS)
    thresholds["scorer"] = scorer
    thresholds["source"] = ("held-out 相似问 and entries, generic out-of-scope messages"
                            + (f", {len(labelled)} labelled calibration queries" if labelled else ""))
    return thresholds


def build_and_publish(entries: Iterable[Entry], out: Path, *, labelled: Sequence[Tuple[str, Optional[str]]] = (),
                      calibrate_thresholds: bool = True, dict_dir: Optional[Path] = SHOP_DICT_DIR,
                      extra_manifest: Optional[Dict] = None, config: Optional[Dict] = None) -> BuildReport:
    entries = list(entries)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    index = KnowledgeIndex.build(entries, dict_dir=dict_dir, config=config)
    seconds["index"] = time.perf_counter() - t0
    if calibrate_thresholds:
        t1 = time.perf_counter()
        index.thresholds = calibrate(index, index.entries, labelled, dict_dir)
        index.scorer = index.thresholds.get("scorer")
        seconds["calibration"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    build = new_build_dir(out)
    index.save(
        build, extra_manifest={**(extra_manifest or {}), "build_seconds": {k: round(v, 3) for k, v in seconds.items()}}
    )
    publish(build, out)
    seconds["save"] = time.perf_counter() - t2
    logger.info("published %d entries to %s (%s)", len(index), build, {k: round(v, 2) for k, v in seconds.items()})
    return BuildReport(len(index), index.thresholds, build, seconds)
