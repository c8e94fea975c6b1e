"""Validated ingestion: read an extract, validate it against its schema with Great Expectations.

    from expectations import read_extract, fingerprint, validate_extract
    df = read_extract(path)
    report = validate_extract(df, schema, docs_dir=Path("validation-docs"))
    report.raise_for_failures()   # ExtractValidationError (an InputError) naming every failure

Great Expectations itself is imported only when a validation runs.
"""

from expectations.reading import ExtractError, fingerprint, read_extract
from expectations.suite import build_suite, load_extra_expectations, save_suite
from expectations.validate import ExtractValidationError, Failure, ValidationReport, validate_extract

__all__ = [
    "ExtractError",
    "ExtractValidationError",
    "Failure",
    "ValidationReport",
    "build_suite",
    "fingerprint",
    "load_extra_expectations",
    "read_extract",
    "save_suite",
    "validate_extract",
]
