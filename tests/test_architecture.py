"""docs/architecture.md against the code: the package map names every module and no
module that is gone, and the SQL functions table names every function the schema
files define."""

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dataserv"
DOC = ROOT / "docs" / "architecture.md"
SUBPACKAGES = ("daemon", "storage", "identity", "registry", "proofs", "web", "client")


def package_map(text):
    """{subpackage: the text of its entry} from the map's code block."""
    block = text.split("```", 2)[1]
    sections, current = {}, None
    for line in block.splitlines():
        start = re.match(r"^  (\w+)/", line)
        if start:
            current = start.group(1)
            sections[current] = ""
        elif not line.startswith("   "):
            current = None
        if current is not None:
            sections[current] += line + "\n"
    return sections


def modules(subpackage):
    return {path.name for path in (PACKAGE / subpackage).glob("*.py")
            if path.name != "__init__.py"}


def schema_functions():
    names = set()
    for path in (PACKAGE / "storage" / "schema").glob("*.sql"):
        names.update(re.findall(r"CREATE (?:OR REPLACE )?FUNCTION (\w+)", path.read_text()))
    return names


class ArchitectureDocTests(SynchronousTestCase):

    def setUp(self):
        self.text = DOC.read_text()

    def test_the_map_has_every_subpackage(self):
        self.assertEqual(sorted(package_map(self.text)), sorted(SUBPACKAGES))
        found = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
        self.assertEqual(found, set(SUBPACKAGES))

    def test_every_module_is_in_the_map(self):
        sections = package_map(self.text)
        for subpackage in SUBPACKAGES:
            named = set(re.findall(r"\b(\w+\.py)\b", sections[subpackage]))
            self.assertEqual(modules(subpackage) - named, set(), subpackage)

    def test_every_module_named_exists(self):
        for subpackage, name in re.findall(
                r"\b(%s)/(\w+)\.py\b" % "|".join(SUBPACKAGES), self.text):
            self.assertIn(name + ".py", modules(subpackage), subpackage)
        for subpackage, section in package_map(self.text).items():
            for name in re.findall(r"\b(\w+\.py)\b", section):
                self.assertIn(name, modules(subpackage), subpackage)

    def test_sql_functions_table(self):
        self.assertIn("\n## SQL functions\n", self.text)
        table = self.text.split("## SQL functions", 1)[1].split("\n## ", 1)[0]
        listed = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
        self.assertEqual(listed, schema_functions())
        self.assertIn("record_contacts", listed)
