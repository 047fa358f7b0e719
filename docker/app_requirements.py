"""Print the platform image's requirements from pyproject.toml (run inside the image build).

The image gets the project's runtime dependencies minus what only the lab harness uses, and
moto with just its DynamoDB backend and server: ``moto[server]`` drags in every AWS service's
dependencies (cfn-lint, sympy, networkx: ~200 MB) that a DynamoDB endpoint never imports.
"""

import re
import sys
import tomllib

HARNESS_ONLY = {"python-on-whales", "typer", "rich", "schemathesis"}
REPLACE = {"moto": ["moto[dynamodb]{spec}", "flask", "flask-cors"]}


def main(path: str) -> None:
    with open(path, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    for dep in deps:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*(.*)$", dep)
        if match is None:
            print(dep)
            continue
        name, spec = match.group(1).lower(), match.group(3)
        if name in HARNESS_ONLY:
            continue
        for line in REPLACE.get(name, [dep]):
            print(line.format(spec=spec))


if __name__ == "__main__":
    main(sys.argv[1])
