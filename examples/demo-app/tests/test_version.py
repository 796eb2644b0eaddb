import unittest

import textkit


class VersionTest(unittest.TestCase):
    def test_version_is_semver(self):
        self.assertEqual(len(textkit.__version__.split(".")), 3)


if __name__ == "__main__":
    unittest.main()
