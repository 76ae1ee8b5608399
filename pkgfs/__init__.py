"""pkgfs: a pypicloud-style package store, mounted as a directory tree."""
