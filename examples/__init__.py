"""Examples of using nncompress as a user would; not part of the installed packages."""
