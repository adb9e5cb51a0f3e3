"""Validate KServe objects against the KServe SDK's models, in a process of its own.

Run by tests/test_deploy.py as a subprocess: importing ``kserve`` registers
KServe's copy of the ``inference`` protobuf package in the default descriptor
pool, after which ``tritonclient.grpc`` can no longer be imported in that
process, so the SDK never enters the test process.

stdin: JSON list of {"label", "type", "doc"}; stdout: JSON list of
{"label", "error"} with error "" when the object is valid.

The SDK's own deserializer drops unknown fields silently, so the walk below
over ``attribute_map``/``openapi_types`` makes a typo an error, and building
each model runs the SDK's required-field checks.
"""
from __future__ import annotations

import json
import re
import sys


def kserve_model(data, type_name: str, where: str):
    """Build the SDK model for ``data``; unknown fields and wrong types are errors."""
    import kserve.models
    import kubernetes.client.models

    if data is None:
        return None
    # the KServe models write list[X] / dict(str, X), the Kubernetes client List[X] / Dict[str, X]
    if type_name.lower().startswith("list["):
        assert isinstance(data, list), f"{where}: expected a list"
        return [kserve_model(item, type_name[5:-1], f"{where}[{i}]") for i, item in enumerate(data)]
    if type_name.lower().startswith(("dict(", "dict[")):
        value_type = re.match(r"dict[(\[]([^,]*), (.*)[)\]]$", type_name, re.I).group(2)
        assert isinstance(data, dict), f"{where}: expected a mapping"
        return {k: kserve_model(v, value_type, f"{where}.{k}") for k, v in data.items()}
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if type_name in primitive:
        assert isinstance(data, primitive[type_name]) and not (
            type_name == "int" and isinstance(data, bool)), f"{where}: expected {type_name}"
        return data
    if type_name in ("object", "datetime"):  # IntOrString, free-form and time fields
        return data
    cls = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
    assert isinstance(data, dict), f"{where}: expected a {type_name} mapping"
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(by_key))
    assert not unknown, f"{where}: {type_name} has no field(s) {unknown}"
    kwargs = {by_key[k]: kserve_model(v, cls.openapi_types[by_key[k]], f"{where}.{k}")
              for k, v in data.items()}
    return cls(**kwargs)  # the constructors reject missing required fields


def main() -> int:
    results = []
    for item in json.load(sys.stdin):
        try:
            model = kserve_model(item["doc"], item["type"], item["label"])
            error = "" if model.metadata.name == item["doc"]["metadata"]["name"] else "name lost"
        except Exception as exc:  # every failure is a finding about that object
            error = f"{type(exc).__name__}: {exc}"
        results.append({"label": item["label"], "error": error})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
