"""NLU quality report: per-intent precision / recall on a held-out split of our own training data,
and on the independent field set (tests/data/nlu_field_test.yml), with the confusions that remain.
Next to config.yml, the same pipeline with the classifier's sentence vectors switched the other way
(on if config.yml has them off, off if on), and any further classifier variants asked for with
--variant (e.g. --variant C=1,dense_weight=0.25), all in the same run on the same data. Optionally
the same for Rasa's DIETClassifier pipeline (--with-diet), which is what config.yml replaced.

    .venv/bin/python bench/nlu_report.py [--with-diet] [--variant K=V,K=V ...] [--out FILE]
                                                            -> docs/NLU_REPORT.md
"""
from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REPORT = REPO / "docs" / "NLU_REPORT.md"
FIELD = REPO / "tests" / "data" / "nlu_field_test.yml"
ENTITY_RE = re.compile(r"\[([^\]]+)\]\([^)]+\)")
CLASSIFIER = "LinearIntentClassifier"
DIET_PIPELINE = """recipe: default.v1
language: zh
pipeline:
  - name: JiebaTokenizer
    dictionary_path: nlu_data/jieba
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 3
  - name: DIETClassifier
    epochs: 80
    entity_recognition: false
    constrain_similarities: true
    random_seed: 42
policies: []
"""


def load_examples(path: Path) -> List[Tuple[str, str]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for block in data.get("nlu", []):
        if "intent" not in block:
            continue
        for line in block["examples"].splitlines():
            line = line.strip()
            if line.startswith("- "):
                out.append((line[2:], block["intent"]))
    return out


def training_examples() -> List[Tuple[str, str]]:
    examples = []
    for path in sorted((REPO / "nlu_data").rglob("*.yml")):
        examples.extend(load_examples(path))
    return examples


def stratified_split(examples, fraction=0.2, seed=7):
    by_intent = defaultdict(list)
    for text, intent in examples:
        by_intent[intent].append((text, intent))
    rng = random.Random(seed)
    train, test = [], []
    for intent, items in sorted(by_intent.items()):
        rng.shuffle(items)
        k = max(1, int(len(items) * fraction))
        test.extend(items[:k])
        train.extend(items[k:])
    return train, test


def write_nlu(examples, path: Path) -> None:
    by_intent = defaultdict(list)
    for text, intent in examples:
        by_intent[intent].append(text)
    lines = ['version: "3.1"', "nlu:"]
    for path_regex in sorted((REPO / "nlu_data").glob("entities.yml")):
        for block in yaml.safe_load(path_regex.read_text(encoding="utf-8"))["nlu"]:
            if "regex" in block:
                lines.append(f"- regex: {block['regex']}")
                lines.append("  examples: |")
                lines.extend(f"    {example}" for example in block["examples"].strip().splitlines())
    for intent, texts in sorted(by_intent.items()):
        lines.append(f"- intent: {intent}")
        lines.append("  examples: |")
        lines.extend(f"    - {t}" for t in texts)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def train(config: Path, nlu: Path, out: Path) -> Tuple[Path, float]:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "rasa", "train", "nlu", "-c", str(config), "-u", str(nlu), "--out",
                    str(out), "--fixed-model-name", "nlu"], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return out / "nlu.tar.gz", time.monotonic() - start


def classifier_params(config: Path) -> Dict[str, Any]:
    """The LinearIntentClassifier's parameters in a config (defaults filled in)."""
    from bot.nlu.linear_intent_classifier import LinearIntentClassifier

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    step = next(s for s in data["pipeline"] if str(s["name"]).endswith(CLASSIFIER))
    return {**LinearIntentClassifier.get_default_config(), **{k: v for k, v in step.items() if k != "name"}}


def describe(params: Dict[str, Any]) -> str:
    vectors = (f"sparse + sentence vectors (dense_weight {params['dense_weight']})" if params["sentence_vectors"]
               else "sparse only")
    return f"{vectors}, C {params['C']}"


def variant_config(config: Path, changes: Dict[str, Any], path: Path) -> Path:
    """config with the classifier's parameters changed (the rest of the pipeline as it is)."""
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    step = next(s for s in data["pipeline"] if str(s["name"]).endswith(CLASSIFIER))
    step.update(changes)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def parse_variant(text: str) -> Dict[str, Any]:
    changes = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE], got {text!r}")
        changes[key.strip()] = yaml.safe_load(value.strip())
    return changes


def predict(model: Path, texts: List[str]) -> Tuple[List[str], float]:
    """Predicted intents, and the median time of one parse (the whole NLU pipeline) in ms."""
    import logging

    import structlog
    from rasa.core.agent import Agent

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    agent = Agent.load(str(model))

    async def run():
        await agent.parse_message("你好")  # warm-up
        names, times = [], []
        for t in texts:
            start = time.perf_counter()
            names.append((await agent.parse_message(t))["intent"]["name"])
            times.append(time.perf_counter() - start)
        return names, 1000 * statistics.median(times)

    return asyncio.run(run())


def scores(gold: List[str], pred: List[str]):
    intents = sorted(set(gold))
    rows = []
    for intent in intents:
        tp = sum(g == p == intent for g, p in zip(gold, pred))
        fp = sum(p == intent and g != intent for g, p in zip(gold, pred))
        fn = sum(g == intent and p != intent for g, p in zip(gold, pred))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((intent, precision, recall, f1, tp + fn))
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    macro_f1 = sum(r[3] for r in rows) / len(rows)
    confusion = Counter((g, p) for g, p in zip(gold, pred) if g != p)
    return accuracy, macro_f1, rows, confusion


def section(title: str, gold, pred, errors_shown=0, texts=None) -> List[str]:
    accuracy, macro_f1, rows, confusion = scores(gold, pred)
    lines = [f"### {title}", "", f"Accuracy **{accuracy:.3f}**, macro F1 {macro_f1:.3f}, {len(gold)} messages.", "",
             "| intent | precision | recall | F1 | n |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {i} | {p:.2f} | {r:.2f} | {f:.2f} | {n} |" for i, p, r, f, n in rows]
    lines += ["", "Most frequent confusions (gold -> predicted: count): " +
              ", ".join(f"{g} -> {p}: {c}" for (g, p), c in confusion.most_common(12)), ""]
    if errors_shown and texts:
        wrong = [(t, g, p) for t, g, p in zip(texts, gold, pred) if g != p][:errors_shown]
        lines += ["<details><summary>Examples of errors</summary>", ""]
        lines += [f"- `{g}` -> `{p}`: {t}" for t, g, p in wrong]
        lines += ["", "</details>", ""]
    return lines, accuracy


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--with-diet", action="store_true")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="K=V,K=V",
                        help="also config.yml with these LinearIntentClassifier parameters (repeatable)")
    parser.add_argument("--out", type=Path, default=REPORT, help=f"report file (default {REPORT})")
    args = parser.parse_args()
    examples = training_examples()
    train_part, test_part = stratified_split(examples)
    field = load_examples(FIELD)
    tmp = Path(tempfile.mkdtemp(prefix="siyu-nlu-"))
    config = REPO / "config.yml"
    params = classifier_params(config)
    configs = [(f"config.yml (LinearIntentClassifier: {describe(params)})", config)]
    for n, changes in enumerate([{"sentence_vectors": not params["sentence_vectors"]}, *args.variant]):
        path = variant_config(config, changes, tmp / f"variant{n}.yml")
        changed = ", ".join(f"{k}: {v}" for k, v in changes.items())
        configs.append((f"config.yml with {changed} ({describe(classifier_params(path))})", path))
    if args.with_diet:
        (tmp / "diet.yml").write_text(DIET_PIPELINE, encoding="utf-8")
        configs.append(("DIET baseline (CountVectors word + char_wb 1-3, DIETClassifier 80 epochs)", tmp / "diet.yml"))
    write_nlu(train_part, tmp / "train80.yml")
    write_nlu(examples, tmp / "train100.yml")

    intro = ["# NLU report", "",
           f"Written by `bench/nlu_report.py`. Training data: {len(examples)} hand-written examples in "
           f"{len(set(i for _, i in examples))} intents (`nlu_data/`). Held-out split: a stratified 20 % "
           f"({len(test_part)} messages), model trained on the other 80 %. Field set: 800 messages written "
           "independently by another team member in the style of real customers (long, colloquial, typos, "
           "pinyin, masked numbers), never used for training; model trained on all training data.", "",
           "**Read these numbers as smoke tests, not as the measure.** Both sets were written by the team. "
           "Measured on real customers of a large shop (held out, not in this repository), the pipeline of "
           "2026-11 scored **0.68** intent accuracy while this field set said 0.95: self-written sets "
           "overstate real accuracy by ~27 points, and nothing here can tell how far the changes since then "
           "moved the real figure. Only the outside re-run of the real-customer checks (target 0.85) says "
           "that. What these sets can show: a change that loses on them is very likely worse on real "
           "messages too; a change that wins on them may still not help real customers.", ""]
    doc: List[str] = []
    summary = []
    for name, config in configs:
        model80, t80 = train(config, tmp / "train80.yml", tmp / f"m80-{config.stem}")
        split_pred, _ = predict(model80, [t for t, _ in test_part])
        model100, t100 = train(config, tmp / "train100.yml", tmp / f"m100-{config.stem}")
        field_pred, parse_ms = predict(model100, [t for t, _ in field])
        doc += [f"## {name}", "", f"Training time (NLU only, all data): {t100:.0f} s. Median time to parse "
                f"one field-set message (whole NLU pipeline): {parse_ms:.1f} ms.", ""]
        lines, split_acc = section("Held-out 20 % of our data", [i for _, i in test_part], split_pred)
        doc += lines
        lines, field_acc = section("Independent field set", [i for _, i in field], field_pred, 25,
                                   [t for t, _ in field])
        doc += lines
        summary.append(f"| {name} | {split_acc:.3f} | {field_acc:.3f} | {t100:.0f} s | {parse_ms:.1f} ms |")
        print(f"{name}: split {split_acc:.3f} field {field_acc:.3f} train {t100:.0f}s parse {parse_ms:.1f}ms",
              flush=True)
    head = ["## Summary", "", "| pipeline | held-out accuracy | field-set accuracy | NLU training time | "
            "parse time (median) |", "| --- | --- | --- | --- | --- |", *summary, ""]
    args.out.write_text("\n".join(intro + head + doc) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
