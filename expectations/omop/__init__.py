"""The OMOP Common Data Model (OHDSI, v5.4 column names), in and out.

- `mapping`: the mapping file (which concepts become which extract columns, and back);
- `extract`: OMOP tables -> the long extract and a draft schema, with a report of units and
  unmapped concepts (`healthgym omop extract`);
- `tables`: the CDM tables this project writes, and writing frames in one transaction;
- `release`: a synthetic release -> OMOP frames (fresh ids, dates from a synthetic anchor);
- `load`: a long extract -> OMOP tables (the bundled PBC cohort as an OMOP database, for the demo).
"""
