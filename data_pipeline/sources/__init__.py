"""Dataset sources that are not web scrapers or loaders of local folders: art shipped by a package."""
