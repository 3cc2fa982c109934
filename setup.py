from setuptools import find_packages, setup

setup(
    name="dataserv",
    version="3.0.0",
    description="Federated registry for storage farmers, on Twisted and PostgreSQL",
    python_requires=">=3.9",
    # twisted/plugins has no __init__.py on purpose (it is Twisted's namespace);
    # listing it here installs the drop-in next to Twisted's own plugins.
    packages=find_packages(include=["dataserv", "dataserv.*"]) + ["twisted.plugins"],
    package_data={"dataserv.storage": ["schema/*.sql"], "dataserv.web": ["static/*"], "twisted.plugins": ["dataserv_plugin.py"]},
    install_requires=[
        "twisted>=22.10",
        "klein>=21.8",
        "txpostgres>=1.7",
        "psycopg2-binary>=2.9",
        "ecdsa>=0.18",
        "base58>=2.1",
        "coincurve>=18",
        "treq>=22.1",
        "chiapos>=2.0.12",
    ],
)
