"""Columns of a CSV, TSV, JSON Lines, Parquet or `LABEL TEXT` file, and the sentence pairs of a parallel corpus (a
TSV or two aligned files), streamed in chunks of rows (lists of strings), with one-line errors naming the file, the
row and the fix.

CSV and TSV are parsed by Arrow's multi-threaded reader (pyarrow.csv) one piece of the file at a time (about
PIECE bytes cut at a record boundary): Arrow's streaming reader reads far ahead of its consumer and would hold much
of a large file in memory. Parquet is read by pyarrow.parquet, JSON Lines line
by line (a JSON value may be any type; its text is what dlkit reads). CSV follows RFC 4180 quoting; TSV has no
quoting at all (a quote is an ordinary character), so a stray `"` cannot swallow the rows after it. Without a header
row (header=False) the columns are named 0, 1, ... When Arrow refuses a file, the file is read again with Python's
csv module up to the row at fault, so that the message names it exactly.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dlkit.errors import DlkitError, UsageError, did_you_mean

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
# bytes Arrow parses at a time: a chunk of rows is about this large
BLOCK = 16 << 20
# bytes of a CSV/TSV file handed to Arrow at once (cut at the last record boundary inside)
PIECE = 32 << 20
JSON_ROWS = 65536
# sentence pairs of a parallel corpus per chunk
PAIR_ROWS = 16384
Chunk = dict[str, list[str]]


# formats a suffix does not tell: `LABEL TEXT` lines (the label, a space, the text; fastText's __label__ prefix too)
NAMED_FORMATS = ("label_text",)


def file_format(path: Path, given: str | None) -> str:
    """csv, tsv, jsonl, parquet or label_text: `given`, else from the file's suffix."""
    fmt = given or FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "tsv", "jsonl", "parquet", *NAMED_FORMATS):
        choices = ("csv", "tsv", "jsonl", "parquet", *NAMED_FORMATS)
        hint = did_you_mean(given, choices) if given else ""
        raise UsageError(f"{path}: unknown format{f' {given!r}' if given else ''}; name it .csv, .tsv, .jsonl or "
                         f".parquet, or set data.format={'|'.join(choices)}.{hint}")
    return fmt


def check_encoding(encoding: str) -> None:
    """Refuse an encoding name Python does not know (data.encoding), with the fix."""
    try:
        codecs.lookup(encoding)
    except LookupError as err:
        raise UsageError(f"data.encoding={encoding!r} is not a known text encoding: use utf-8, latin-1, ...") from err


def read_columns(path: Path, columns: Sequence[str], fmt: str | None = None, header: bool = True,
                 encoding: str = "utf-8") -> Iterator[Chunk]:
    """Chunks of rows of a file: {column: its values as text} for each of `columns`.

    The file is checked before the first chunk: it exists, its format is known, the columns are there.
    """
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist: check data.train_file / val_file / test_file.")
    fmt = file_format(path, fmt)
    check_encoding(encoding)
    columns = [str(c) for c in columns]
    if fmt == "jsonl":
        return _json_chunks(path, columns, encoding)
    if fmt == "parquet":
        return _parquet_chunks(path, columns)
    if fmt == "label_text":
        return _label_text_chunks(path, columns, encoding)
    return _delimited_chunks(path, columns, fmt, header, encoding)


def _missing(path: Path, needed: Sequence[str], names: Sequence[str], header: bool, fmt: str) -> None:
    for column in needed:
        if column not in names:
            no_header = " If the file has no header row: data.header=false and columns by number (0, 1, ...)." \
                if header and fmt in ("csv", "tsv") else ""
            raise UsageError(f"{path} has no column {column!r}.{did_you_mean(column, names)} "
                             f"Columns: {', '.join(sorted(names))}.{no_header}")


def _python_reader(handle, fmt: str):
    if fmt == "csv":
        return csv.reader(handle, delimiter=","), "quote text containing commas"
    return csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), "a text cannot contain a TAB in a TSV file"


def _first_record(path: Path, fmt: str, encoding: str) -> list[str] | None:
    with open(path, encoding=encoding, newline="") as handle:
        try:
            return next((fields for fields in _python_reader(handle, fmt)[0] if fields), None)
        except UnicodeDecodeError as err:
            raise not_encoded(path, encoding, err) from err


def not_encoded(path: Path, encoding: str, err: UnicodeDecodeError) -> UsageError:
    hint = "latin-1" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else "utf-8"
    return UsageError(f"{path} is not {encoding} text (byte {err.object[err.start:err.start + 1]!r} cannot be "
                      f"decoded): set data.encoding={hint} (or the file's encoding).")


def _delimited_chunks(path: Path, columns: list[str], fmt: str, header: bool, encoding: str) -> Iterator[Chunk]:
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    first = _first_record(path, fmt, encoding)
    if first is None:
        return iter(())
    names = first if header else [str(i) for i in range(len(first))]
    _missing(path, columns, names, header, fmt)
    read = arrow_csv.ReadOptions(block_size=BLOCK, encoding=encoding, column_names=None if header else names)
    parse = arrow_csv.ParseOptions(delimiter="," if fmt == "csv" else "\t", quote_char='"' if fmt == "csv" else False,
                                   newlines_in_values=fmt == "csv", ignore_empty_lines=True)
    convert = arrow_csv.ConvertOptions(include_columns=columns, column_types=dict.fromkeys(columns, pa.string()),
                                       strings_can_be_null=False, quoted_strings_can_be_null=False)

    def batches() -> Iterator[pa.RecordBatch]:
        if not _byte_searchable(encoding):  # (UTF-16 and the like: no cutting at newline bytes; stream it)
            yield from arrow_csv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
            return
        for number, piece in enumerate(_pieces(path, quoted=fmt == "csv")):
            options = read if number == 0 else arrow_csv.ReadOptions(block_size=BLOCK, encoding=encoding,
                                                                      column_names=names)
            table = arrow_csv.read_csv(pa.py_buffer(piece), read_options=options, parse_options=parse,
                                       convert_options=convert)
            yield from table.to_batches(max_chunksize=JSON_ROWS)

    def chunks() -> Iterator[Chunk]:
        try:
            for batch in batches():
                yield {name: batch.column(name).to_pylist() for name in columns}
        except (pa.ArrowInvalid, UnicodeDecodeError) as err:
            _diagnose(path, columns, fmt, header, encoding)  # raises the exact message
            raise DlkitError(f"{path}: cannot be read ({' '.join(str(err).split())})") from err

    return chunks()


def _byte_searchable(encoding: str) -> bool:
    """Whether newlines and quotes are single ASCII bytes in this encoding (UTF-8, Latin-1, cp1252: yes)."""
    try:
        return "\n\"".encode(encoding) == b"\n\""
    except (LookupError, UnicodeError):
        return False


def _pieces(path: Path, quoted: bool) -> Iterator[bytes]:
    """The file's bytes in pieces of about PIECE bytes, each ending at a record boundary: a newline (with `quoted`,
    RFC 4180 CSV, only a newline outside quotes: an even number of quote characters before it in the piece). Blank
    pieces are skipped; a record longer than a piece makes the piece longer."""
    import numpy as np

    rest = b""
    with open(path, "rb") as handle:
        while True:
            data = handle.read(PIECE)
            if not data:
                if rest.strip():
                    yield rest
                return
            data = rest + data
            if quoted:
                raw = np.frombuffer(data, dtype=np.uint8)
                inside = np.bitwise_xor.accumulate(raw == ord('"'))  # after each byte: inside quotes?
                ends = np.flatnonzero((raw == ord("\n")) & ~inside)
                cut = int(ends[-1]) + 1 if len(ends) else 0
            else:
                cut = data.rfind(b"\n") + 1
            if cut == 0:  # no record ends in it yet
                rest = data
                continue
            if data[:cut].strip():
                yield data[:cut]
            rest = data[cut:]


def _diagnose(path: Path, columns: list[str], fmt: str, header: bool, encoding: str) -> None:
    """Read the file with Python's csv module and raise at the first row at fault (the row Arrow stopped at)."""
    with open(path, encoding=encoding, newline="") as handle:
        reader, fix = _python_reader(handle, fmt)
        names, what = None, "the header has" if header else "the first row has"
        try:
            for number, fields in enumerate(reader, 1):
                if not fields:
                    continue
                if names is None:
                    names = fields if header else [str(i) for i in range(len(fields))]
                    if header:
                        continue
                if len(fields) > len(names):
                    raise DlkitError(f"{path} row {number} has {len(fields)} fields, {what} {len(names)} ({fix})")
                row = dict(zip(names, fields))
                if any(row.get(c) is None for c in columns):
                    raise DlkitError(f"{path}: row {number} is missing its {columns[0]!r} or {columns[1]!r} value"
                                     if len(columns) > 1 else f"{path}: row {number} is missing its {columns[0]!r}")
        except UnicodeDecodeError as err:
            raise not_encoded(path, encoding, err) from err


def _json_chunks(path: Path, columns: list[str], encoding: str) -> Iterator[Chunk]:
    def chunks() -> Iterator[Chunk]:
        chunk: Chunk = {c: [] for c in columns}
        checked = False
        try:
            with open(path, encoding=encoding) as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DlkitError(f"{path}:{number}: not valid JSON ({err.msg})") from err
                    if not isinstance(row, dict):
                        raise DlkitError(f"{path}:{number}: expected a JSON object like {{\"text\": ..., \"label\": "
                                         f"...}}, got a JSON {type(row).__name__}")
                    if not checked:
                        _missing(path, columns, list(row), False, "jsonl")
                        checked = True
                    for column in columns:
                        value = row.get(column)
                        if value is None:
                            raise DlkitError(f"{path}: row {number} is missing its {column!r} value")
                        chunk[column].append(value if isinstance(value, str) else json.dumps(value))
                    if len(chunk[columns[0]]) >= JSON_ROWS:
                        yield chunk
                        chunk = {c: [] for c in columns}
        except UnicodeDecodeError as err:
            raise not_encoded(path, encoding, err) from err
        if chunk[columns[0]]:
            yield chunk

    return chunks()


def _label_text_chunks(path: Path, columns: list[str], encoding: str) -> Iterator[Chunk]:
    """`LABEL TEXT` lines (Kim 2014's subj/cr/mpqa files, fastText's `__label__pos text`): columns label, text."""
    unknown = [c for c in columns if c not in ("label", "text")]
    if unknown:
        raise UsageError(f"data.format=label_text has the columns label and text, not {', '.join(unknown)}: set "
                         "data.text_column=text data.label_column=label.")

    def rows() -> Iterator[tuple[str, str]]:
        try:
            with open(path, encoding=encoding) as handle:
                for line in handle:
                    fields = line.split(None, 1)
                    if fields:  # a label alone is a row with an empty text (CR has 7: Kim's 3775 rows count them)
                        yield fields[0].removeprefix("__label__"), fields[1].strip() if len(fields) > 1 else ""
        except UnicodeDecodeError as err:
            raise not_encoded(path, encoding, err) from err

    return ({c: chunk[c] for c in columns} for chunk in chunks_of(rows(), ("label", "text"), JSON_ROWS))


def _parquet_chunks(path: Path, columns: list[str]) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import parquet

    try:
        table = parquet.ParquetFile(path)
    except pa.ArrowException as err:
        raise DlkitError(f"{path} is not a Parquet file ({' '.join(str(err).split())})") from err
    _missing(path, columns, table.schema_arrow.names, False, "parquet")

    def chunks() -> Iterator[Chunk]:
        for batch in table.iter_batches(batch_size=JSON_ROWS, columns=columns):
            chunk = {}
            for name in columns:
                values = batch.column(name)
                if values.null_count:
                    raise DlkitError(f"{path}: column {name!r} has {values.null_count} empty (null) values in rows "
                                     "to read: fill or drop them.")
                chunk[name] = pc.cast(values, pa.string()).to_pylist() if values.type != pa.string() \
                    else values.to_pylist()
            yield chunk

    return chunks()


def chunks_of(rows: Iterable[Sequence[str]], keys: Sequence[str], size: int) -> Iterator[Chunk]:
    """Rows (one value per key) gathered into chunks of `size` rows: {key: its values}."""
    chunk: Chunk = {key: [] for key in keys}
    for row in rows:
        for key, value in zip(keys, row):
            chunk[key].append(value)
        if len(chunk[keys[0]]) == size:
            yield chunk
            chunk = {key: [] for key in keys}
    if chunk[keys[0]]:
        yield chunk


# -- sentence pairs ----------------------------------------------------------------------------------------
def read_pairs(path: str | Path, target_path: str | Path | None = None) -> Iterator[dict[str, list[str]]]:
    """Chunks of pairs from a TSV file (source TAB target per line) or from two line-aligned files, streamed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist.")
    if target_path is not None:
        target_path = Path(target_path).expanduser()
        if not target_path.is_file():
            raise UsageError(f"data file {target_path} does not exist.")
        return _aligned(path, target_path)
    return _tsv(path)


def _aligned(path: Path, target_path: Path) -> Iterator[dict[str, list[str]]]:
    def aligned(sources: Any, targets: Any) -> Iterator[tuple[str, str]]:
        for number, (source, target) in enumerate(_zip_lines(sources, targets), 1):
            if source is None or target is None:
                longer, shorter = (path, target_path) if target is None else (target_path, path)
                raise DlkitError(f"{longer} has more lines than {shorter} (line {number}): the files are not aligned.")
            yield source, target

    with open(path, encoding="utf-8") as sources, open(target_path, encoding="utf-8") as targets:
        yield from chunks_of(aligned(sources, targets), ("src", "tgt"), PAIR_ROWS)


def _zip_lines(a: Any, b: Any) -> Iterator[tuple[str | None, str | None]]:
    from itertools import zip_longest

    for left, right in zip_longest(a, b):
        yield (left.rstrip("\r\n") if left is not None else None), (right.rstrip("\r\n") if right is not None else None)


def _tsv(path: Path) -> Iterator[dict[str, list[str]]]:
    chunk: dict[str, list[str]] = {"src": [], "tgt": []}
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 2:
                raise DlkitError(f"{path}:{number}: expected source TAB target")
            chunk["src"].append(row[0])
            chunk["tgt"].append(row[1])
            if len(chunk["src"]) == PAIR_ROWS:
                yield chunk
                chunk = {"src": [], "tgt": []}
    if chunk["src"]:
        yield chunk
