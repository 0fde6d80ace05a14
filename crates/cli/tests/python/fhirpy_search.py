"""Drives a running medvault with the fhirpy client library (PyPI `fhirpy`): creates
resources, searches with prefixes, modifiers, includes and sorting, follows the server's
paging links to the end, counts, and uses conditional update and delete.

Usage: python3 fhirpy_search.py BASE_URL TOKEN   (exit 0 only if every check passed)
"""

import sys

from fhirpy import SyncFHIRClient


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    client = SyncFHIRClient(base, authorization=f"Bearer {token}")
    checks = []

    def check(name, condition, detail=""):
        checks.append((name, bool(condition)))
        print(("ok    " if condition else "FAIL  ") + name + (f": {detail}" if not condition else ""))

    # 30 patients, every third with an accented family name; observations for the first.
    created = []
    for index in range(30):
        family = "Lefèvre-Müller" if index % 3 == 0 else "Pythonsson"
        patient = client.resource(
            "Patient",
            name=[{"family": family, "given": ["Ada"]}],
            identifier=[{"system": "urn:oid:1.2.3.4", "value": f"PY-{index:03}"}],
            birthDate=f"19{50 + index}-03-01",
        )
        patient.save()
        created.append(patient)
    first = created[0]
    for day in range(1, 11):
        client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            subject={"reference": f"Patient/{first.id}"},
            effectiveDateTime=f"2025-01-{day:02}T09:00:00Z",
            valueQuantity={"value": 60 + day, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        ).save()

    # Paging: fetch_all follows the absolute `next` links the server gives.
    pythons = client.resources("Patient").search(family="pythons").limit(7).fetch_all()
    ids = [p.id for p in pythons]
    check("fetch_all pages through 20 matches, 7 at a time", len(ids) == 20 and len(set(ids)) == 20, len(ids))
    first_page = client.resources("Patient").search(family="pythons").limit(7).fetch()
    check("a first page holds 7", len(first_page) == 7, len(first_page))
    raw = client.resources("Patient").search(family="pythons").limit(7).fetch_raw()
    links = {link["relation"]: link["url"] for link in raw["link"]}
    check("the next link is absolute", links.get("next", "").startswith("http"), links)
    check("count() gives the total", client.resources("Patient").search(family="pythons").count() == 20)

    # Accents and case are ignored by default; :exact keeps them.
    accented = client.resources("Patient").search(family="LEFEVRE-MULL").fetch_all()
    check("an accent-insensitive prefix", len(accented) == 10, len(accented))
    exact = client.resources("Patient").search(**{"family:exact": "Lefèvre-Müller"}).fetch_all()
    check(":exact", len(exact) == 10, len(exact))

    # Tokens, dates with prefixes, quantities, sorting, includes.
    by_identifier = client.resources("Patient").search(identifier="urn:oid:1.2.3.4|PY-007").get()
    check("a patient by identifier", by_identifier.id == created[7].id)
    born = client.resources("Patient").search(birthdate__ge="1970-01-01", family="pythons").fetch_all()
    check("birthdate=ge1970 among them", len(born) == sum(1 for i in range(30) if i % 3 and 50 + i >= 70), len(born))
    week = (
        client.resources("Observation")
        .search(subject=f"Patient/{first.id}", date__ge="2025-01-03", date__lt="2025-01-08")
        .sort("date")
        .fetch()
    )
    days = [o.effectiveDateTime[:10] for o in week]
    check("a date range, sorted", days == [f"2025-01-0{d}" for d in range(3, 8)], days)
    fast = client.resources("Observation").search(**{"value-quantity": "gt67"}).fetch_all()
    check("value-quantity=gt67", len(fast) == 3, len(fast))
    bundle = (
        client.resources("Observation")
        .search(code="http://loinc.org|8867-4")
        .include("Observation", "subject")
        .limit(20)
        .fetch_raw()
    )
    modes = [entry["search"]["mode"] for entry in bundle["entry"]]
    check("_include adds the patient once", modes.count("match") == 10 and modes.count("include") == 1, modes)

    # Conditional update and delete by criteria.
    target = client.resources("Patient").search(identifier="urn:oid:1.2.3.4|PY-011")
    updated, created_new = target.update(
        client.resource("Patient", name=[{"family": "Renamed"}],
                        identifier=[{"system": "urn:oid:1.2.3.4", "value": "PY-011"}])
    )
    check("a conditional update changes the one match", not created_new and updated.id == created[11].id)
    target.delete()
    check("a conditional delete", target.count() == 0)

    passed = sum(1 for _, ok in checks if ok)
    failed = len(checks) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
