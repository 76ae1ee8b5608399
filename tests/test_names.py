import pytest

from pkgfs.names import NotADistribution, is_project_name, normalize, parse_filename


@pytest.mark.parametrize("filename, project, version", [
    ("my_pkg-1.0-py3-none-any.whl", "my-pkg", "1.0"),
    ("My.Pkg_Core-2.0rc1-1-cp311-cp311-manylinux_2_17_x86_64.whl", "my-pkg-core", "2.0rc1"),
    ("my_pkg-1.0.tar.gz", "my-pkg", "1.0"),
    ("foo-bar-1.0.zip", "foo-bar", "1.0"),
    ("foo-bar-1.0.tar.bz2", "foo-bar", "1.0"),
    ("foo-1.0.post1.tar.xz", "foo", "1.0.post1"),
    ("foo-1.0.tgz", "foo", "1.0"),
    ("foo-1.0.tar", "foo", "1.0"),
    ("foo-1.0-py3.8.egg", "foo", "1.0"),
    ("foo-1.0.win32.exe", "foo", "1.0"),
    ("foo-1.0.win-amd64-py3.8.exe", "foo", "1.0"),
    ("foo-1.0.win-amd64.msi", "foo", "1.0"),
    ("foo-1.0-1.noarch.rpm", "foo", "1.0"),
    ("foo-1.0.macosx-10.9.dmg", "foo", "1.0"),
])
def test_distribution_names_parse(filename, project, version):
    assert parse_filename(filename) == (project, version)


@pytest.mark.parametrize("filename", [
    "README.md", "foo.whl", "foo-1.0.whl", "foo-bar.tar.gz", "-1.0.tar.gz", ".foo-1.0.tar.gz",
    "foo-1.0.tar.gz.meta", "a/foo-1.0.tar.gz", "foo\n-1.0.tar.gz", "foo\udcff-1.0.tar.gz", "",
    "x" * 250 + "-1.0.tar.gz",
])
def test_other_names_are_not_distributions(filename):
    with pytest.raises(NotADistribution):
        parse_filename(filename)


def test_normalize_follows_pep_503():
    assert normalize("My_Pkg.Core") == "my-pkg-core"
    assert normalize("a--b__c..d") == "a-b-c-d"


@pytest.mark.parametrize("name, valid", [
    ("my-pkg", True), ("a", True), ("a1-b2", True),
    ("-", False), ("my pkg", False), ("My-Pkg", False), ("..", False), ("", False),
])
def test_project_names(name, valid):
    assert is_project_name(name) is valid
