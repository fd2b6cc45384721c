"""Tests for conf/securechat.service with systemd's own offline checks."""

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.daemon import ROOT

UNIT = os.path.join(ROOT, "conf", "securechat.service")
PLACEHOLDER = "/opt/securechat/venv/bin/twistd"


class UnitFileTests(SynchronousTestCase):
    def setUp(self):
        if not shutil.which("systemd-analyze"):
            raise self.skipTest("systemd-analyze is not installed (.ci/run installs it)")
        directory = self.mktemp()
        os.mkdir(directory)
        self.unit = os.path.join(directory, "securechat.service")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        with open(UNIT) as source, open(self.unit, "w") as target:
            target.write(source.read().replace(PLACEHOLDER, twistd))

    def analyze(self, *args):
        return subprocess.run(["systemd-analyze", *args, self.unit], capture_output=True,
                              text=True, timeout=120)

    def test_verify_is_silent(self):
        """systemd-analyze verify reports nothing (it exits 0 even on unknown keys)."""
        result = self.analyze("verify", "--man=no")
        self.assertEqual((result.returncode, result.stderr.strip()), (0, ""))

    def test_exposure_at_most_two(self):
        """systemd-analyze security rates the unit 2.0 or better."""
        result = self.analyze("security", "--offline=true", "--threshold=20")
        self.assertEqual(result.returncode, 0, result.stdout[-600:])
