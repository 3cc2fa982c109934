import os
import re

from setuptools import find_packages, setup


def _version():
    """The one version, from dataserv/__init__.py (read, not imported)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "dataserv", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="dataserv",
    version=_version(),
    description="Federated registry for storage farmers, on Twisted and PostgreSQL",
    python_requires=">=3.9",
    # twisted/plugins has no __init__.py on purpose (it is Twisted's namespace);
    # listing it here installs the drop-in next to Twisted's own plugins.
    packages=find_packages(include=["dataserv", "dataserv.*"]) + ["twisted.plugins"],
    package_data={"dataserv.storage": ["schema/*.sql"], "dataserv.web": ["static/*", "static/vendor/*/*"], "twisted.plugins": ["dataserv_plugin.py"]},
    install_requires=[
        "twisted>=22.10",
        "klein>=21.8",
        "txpostgres>=1.7",
        "psycopg2-binary>=2.9",
        "ecdsa>=0.18",
        "base58>=2.1",
        # RIPEMD-160 where OpenSSL 3 leaves it out of hashlib.
        "pycryptodome>=3.9",
        "coincurve>=18",
        "treq>=22.1",
        "prometheus_client>=0.17",
        "chiapos>=2.0.12",
    ],
)
