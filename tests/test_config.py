"""Tests for securechat.config: the settings table, TOML files and precedence."""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from securechat.config import (
    DEFAULT_PORT,
    SETTINGS,
    ConfigError,
    ServerSettings,
    build_settings,
    prepare_data_dir,
    read_config_file,
)
from dataclasses import fields


class SettingsTableTests(SynchronousTestCase):
    def test_table_matches_dataclass(self):
        """Every setting in the table is a ServerSettings field and vice versa."""
        self.assertEqual(
            {f.name for f in fields(ServerSettings)}, {s.attribute for s in SETTINGS}
        )

    def test_defaults(self):
        """With no file and no flags, the built-in defaults apply."""
        settings = build_settings(None, {})
        self.assertEqual(
            (settings.interface, settings.port, settings.data_dir),
            ("127.0.0.1", DEFAULT_PORT, "var"),
        )


class ConfigFileTests(SynchronousTestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_file_then_flags(self):
        """A config file overrides defaults and a command-line flag overrides the file."""
        path = self.write('[listen]\nport = 9000\ninterface = "::1"\n')
        settings = build_settings(path, {"port": "9001"})
        self.assertEqual((settings.interface, settings.port), ("::1", 9001))

    def test_unknown_key(self):
        """An unknown key is refused by name."""
        path = self.write("[listen]\nprot = 1\n")
        error = self.assertRaises(ConfigError, read_config_file, path)
        self.assertIn("unknown setting listen.prot", str(error))

    def test_wrong_type(self):
        """A value of the wrong type names the key, the expected type and the value."""
        path = self.write('[listen]\nport = "80"\n')
        error = self.assertRaises(ConfigError, read_config_file, path)
        self.assertIn("listen.port must be an integer, got '80'", str(error))
        path = self.write("[listen]\nport = true\n")
        self.assertRaises(ConfigError, read_config_file, path)

    def test_out_of_range(self):
        """A value out of range names the bound."""
        path = self.write("[listen]\nport = 70000\n")
        error = self.assertRaises(ConfigError, read_config_file, path)
        self.assertIn("listen.port must be at most 65535", str(error))

    def test_top_level_key(self):
        """Settings live in sections; a bare top-level key is refused."""
        error = self.assertRaises(ConfigError, read_config_file, self.write("port = 1\n"))
        self.assertIn("port must be a [section]", str(error))

    def test_bad_toml_and_missing_file(self):
        """Unparseable TOML and unreadable files are one-line errors naming the file."""
        path = self.write("[listen\n")
        self.assertIn("not valid TOML", str(self.assertRaises(ConfigError, read_config_file, path)))
        missing = self.mktemp()
        self.assertIn(missing, str(self.assertRaises(ConfigError, read_config_file, missing)))

    def test_bad_flag(self):
        """A non-numeric --port is refused by name."""
        error = self.assertRaises(ConfigError, build_settings, None, {"port": "http"})
        self.assertIn("--port must be an integer", str(error))

    def test_cert_without_key(self):
        """A certificate without its key (or the reverse) is refused."""
        self.assertRaises(ConfigError, build_settings, None, {"tls-cert": "a.pem"})
        self.assertRaises(ConfigError, build_settings, None, {"tls-key": "a.pem"})

    def test_example_config_is_valid(self):
        """conf/securechat.toml, the documented example, loads cleanly."""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        values = read_config_file(os.path.join(here, "conf", "securechat.toml"))
        self.assertEqual(set(values), {s.key for s in SETTINGS})


class DataDirTests(SynchronousTestCase):
    def test_created_private(self):
        """A new data dir is created mode 0700."""
        path = os.path.join(self.mktemp(), "data")
        prepare_data_dir(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)

    def test_loose_mode_tightened(self):
        """An existing data dir readable by others is tightened to 0700."""
        path = self.mktemp()
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)
        prepare_data_dir(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)

    def test_uncreatable(self):
        """A data dir that cannot be created is a ConfigError naming it."""
        blocker = self.mktemp()
        open(blocker, "w").close()
        error = self.assertRaises(ConfigError, prepare_data_dir, os.path.join(blocker, "d"))
        self.assertIn(blocker, str(error))
