"""Reads the shop's FAQ sheet (CSV / XLSX) and product documents (Markdown / plain text) into entries.

A bad row never stops an import: it is reported with its line number and the rest is imported.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from .entries import DOC, FAQ, Entry, parse_when, stable_id
from .text import normalize

# English header names of the contract plus the Chinese ones operators tend to type
HEADER_ALIASES = {
    "id": "id", "编号": "id", "问题id": "id",
    "question": "question", "问题": "question", "标准问": "question", "标准问题": "question",
    "answer": "answer", "答案": "answer", "回答": "answer", "标准答案": "answer",
    "similar": "similar", "相似问": "similar", "相似问题": "similar",
    "category": "category", "分类": "category", "类目": "category",
    "source": "source", "来源": "source", "出处": "source",
    "valid_from": "valid_from", "生效时间": "valid_from", "生效日期": "valid_from",
    "valid_to": "valid_to", "失效时间": "valid_to", "失效日期": "valid_to", "有效期至": "valid_to",
}
SIMILAR_SEP = re.compile(r"[|｜]")
MAX_TEXT = 4000


@dataclass(frozen=True)
class RowError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ImportResult:
    entries: List[Entry] = field(default_factory=list)
    errors: List[RowError] = field(default_factory=list)

    def extend(self, other: "ImportResult") -> None:
        self.entries.extend(other.entries)
        self.errors.extend(other.errors)


def read_faq(path: Path) -> ImportResult:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        rows = _xlsx_rows(path)
    elif suffix in (".csv", ".txt", ".tsv"):
        rows = _csv_rows(path)
    else:
        raise ValueError(f"{path}: FAQ must be .csv or .xlsx")
    return _entries_from_rows(path.name, rows)


def _csv_rows(path: Path) -> Iterator[Tuple[int, List[Any]]]:
    # utf-8-sig: Excel's "CSV UTF-8" starts with a BOM that would otherwise glue onto the first header
    with open(path, encoding="utf-8-sig", newline="") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        first_line = sample.split("\n", 1)[0]
        delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in first_line and "," not in first_line) else ","
        reader = csv.reader(fh, delimiter=delimiter)
        start = 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def _xlsx_rows(path: Path) -> Iterator[Tuple[int, List[Any]]]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb.worksheets[0]
        for number, row in enumerate(ws.iter_rows(values_only=True), start=1):
            yield number, ["" if v is None else v for v in row]
    finally:
        wb.close()


def _cell(row: List[Any], index: Optional[int]) -> Any:
    if index is None or index >= len(row):
        return ""
    value = row[index]
    return value.strip() if isinstance(value, str) else value


def _entries_from_rows(name: str, rows: Iterable[Tuple[int, List[Any]]]) -> ImportResult:
    result = ImportResult()
    rows = iter(rows)
    columns: Dict[str, int] = {}
    for line, header in rows:
        if not any(str(c).strip() for c in header):
            continue  # leading blank lines
        for i, title in enumerate(header):
            key = HEADER_ALIASES.get(normalize(str(title)).replace(" ", "_"))
            if key and key not in columns:
                columns[key] = i
        break
    else:
        result.errors.append(RowError(name, 1, "empty file"))
        return result
    missing = [c for c in ("question", "answer") if c not in columns]
    if missing:
        result.errors.append(RowError(name, line, f"header lacks column(s) {', '.join(missing)}"))
        return result

    first_line_of: Dict[str, int] = {}
    for line, row in rows:
        if not any(str(c).strip() for c in row if c is not None):
            continue
        try:
            entry = _entry_from_row(row, columns)
        except ValueError as exc:
            result.errors.append(RowError(name, line, str(exc)))
            continue
        if entry.id in first_line_of:
            result.errors.append(
                RowError(name, line, f"duplicate id {entry.id!r} (first at line {first_line_of[entry.id]})")
            )
            continue
        first_line_of[entry.id] = line
        result.entries.append(entry)
    return result


def _entry_from_row(row: List[Any], columns: Dict[str, int]) -> Entry:
    question = str(_cell(row, columns["question"]) or "")
    answer = str(_cell(row, columns["answer"]) or "")
    if not question:
        raise ValueError("empty question")
    if not answer:
        raise ValueError("empty answer")
    if len(question) > MAX_TEXT or len(answer) > MAX_TEXT:
        raise ValueError(f"question or answer longer than {MAX_TEXT} characters")
    raw_id = _cell(row, columns.get("id"))
    if isinstance(raw_id, float) and raw_id.is_integer():
        raw_id = int(raw_id)  # XLSX numbers
    entry_id = str(raw_id).strip() if raw_id not in (None, "") else stable_id(question)
    similar = []
    seen = {normalize(question)}
    for text in SIMILAR_SEP.split(str(_cell(row, columns.get("similar")) or "")):
        text = text.strip()
        if text and normalize(text) not in seen:
            seen.add(normalize(text))
            similar.append(text)
    valid_from = parse_when(_cell(row, columns.get("valid_from")), end_of_day=False)
    valid_to = parse_when(_cell(row, columns.get("valid_to")), end_of_day=True)
    if valid_from and valid_to and valid_from > valid_to:
        raise ValueError("valid_from is after valid_to")
    return Entry(
        id=entry_id, question=question, answer=answer, similar=tuple(similar),
        category=str(_cell(row, columns.get("category")) or ""),
        source=str(_cell(row, columns.get("source")) or ""),
        valid_from=valid_from, valid_to=valid_to, kind=FAQ,
    )


# --- documents ---------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
PASSAGE_CHARS = 400


def read_document(path: Path) -> ImportResult:
    """Markdown is split at its headings (each passage keeps its heading path); plain text at blank
    lines, under the file's first line as title. Long sections are cut at paragraph boundaries."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    if path.suffix.lower() in (".md", ".markdown"):
        sections = _markdown_sections(text)
    elif path.suffix.lower() == ".txt":
        sections = _text_sections(text)
    else:
        raise ValueError(f"{path}: documents must be .md or .txt")
    result = ImportResult()
    doc_title = sections[0][0][0] if sections and sections[0][0] else path.stem
    n = 0
    for heading_path, body in sections:
        heading = " > ".join(heading_path) or doc_title
        for chunk in _chunks(body):
            n += 1
            result.entries.append(Entry(
                id=f"doc:{path.stem}#{n}", question=heading, answer=chunk, kind=DOC, heading=heading,
                category="document", source=f"{path.name} > {heading}",
            ))
    if not result.entries:
        result.errors.append(RowError(path.name, 1, "document has no text"))
    return result


def _markdown_sections(text: str) -> List[Tuple[List[str], str]]:
    sections: List[Tuple[List[str], str]] = []
    stack: List[Tuple[int, str]] = []
    body: List[str] = []
    in_code = False

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(([h for _, h in stack], content))
        body.clear()

    for line in text.split("\n"):
        if line.strip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, match.group(2).strip()))
        else:
            body.append(line)
    flush()
    return sections


def _text_sections(text: str) -> List[Tuple[List[str], str]]:
    lines = text.strip().split("\n")
    if not lines or not lines[0].strip():
        return []
    title, rest = lines[0].strip(), "\n".join(lines[1:]).strip()
    return [([title], rest or title)]


def _chunks(body: str) -> List[str]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    chunks: List[str] = []
    current = ""
    for para in paragraphs:
        if current and len(current) + len(para) > PASSAGE_CHARS:
            chunks.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return chunks


def read_sources(faq: Iterable[Path] = (), docs: Iterable[Path] = ()) -> ImportResult:
    """FAQ files and document files or folders (every .md / .txt inside, sorted)."""
    result = ImportResult()
    for path in faq:
        result.extend(read_faq(Path(path)))
    for path in docs:
        path = Path(path)
        files = (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in (".md", ".markdown", ".txt"))
            if path.is_dir() else [path]
        )
        for file in files:
            result.extend(read_document(file))
    return result
