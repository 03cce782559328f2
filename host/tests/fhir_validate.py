"""Validates FHIR R4 NDJSON files with the `fhir.resources` models.

Usage: python fhir_validate.py FILE.ndjson [FILE.ndjson ...]

Every line must be one JSON resource that parses as the R4 model class for
its resourceType (unknown elements, wrong types, missing required elements
and invalid primitive values are errors). Errors are printed as
`file:line: resourceType/id: message`; the exit status is 1 when there is
any, 2 when the models are not FHIR R4.
"""

import json
import sys

import fhir.resources
from fhir.resources import get_fhir_model_class


def validate(path):
    errors = 0
    counts = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                print(f"{path}:{number}: empty line")
                errors += 1
                continue
            data = None
            try:
                data = json.loads(line)
                kind = data.get("resourceType", "")
                model = get_fhir_model_class(kind)
                model.parse_obj(data)
                counts[kind] = counts.get(kind, 0) + 1
            except Exception as e:  # each line's failure is reported, then the next line
                where = f"{data.get('resourceType', '?')}/{data.get('id', '?')}" if isinstance(data, dict) else "?"
                message = " ".join(str(e).split())
                print(f"{path}:{number}: {where}: {message}")
                errors += 1
    return errors, counts


def main(paths):
    if fhir.resources.__fhir_version__ != "4.0.1":
        print(f"fhir.resources {fhir.resources.__version__} models FHIR {fhir.resources.__fhir_version__}, not R4 (4.0.1)")
        return 2
    total_errors = 0
    total = {}
    for path in paths:
        errors, counts = validate(path)
        total_errors += errors
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(total.items()))
    print(f"valid FHIR R4 ({fhir.resources.__fhir_version__}): {summary or 'nothing'}; {total_errors} invalid line(s)")
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
