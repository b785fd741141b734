"""Which packages the wheel holds: everything under exporter/, plus two directories whose
source of truth lives outside it and which the wheel carries as package data.

The runbook docs stay in docs/runbooks/ (where every alert's runbook_url points and where the
other docs link them) and the Alertmanager example in alerts/ (beside the rules it routes).
Mapping those directories into the package here (pyproject.toml's package-data picks the
files) puts them in the wheel as exporter/_shipped/runbooks/*.md and
exporter/_shipped/alerts/alertmanager.yml, and in the sdist, with no second copy in the
repository. exporter/shipped.py finds them installed or in a source checkout.
The rest of the build configuration is in pyproject.toml.
"""

from setuptools import find_packages, setup

# package in the wheel -> directory in the repository (exporter.shipped.SOURCES says the same,
# tests/test_shipped.py holds the two equal)
SHIPPED = {
    "exporter._shipped.runbooks": "docs/runbooks",
    "exporter._shipped.alerts": "alerts",
}

setup(
    packages=[*find_packages(include=["exporter", "exporter.*"]), *SHIPPED],
    package_dir=SHIPPED,
)
