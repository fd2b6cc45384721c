"""Load generator, bare relay baseline and scenarios: ``make bench``."""
