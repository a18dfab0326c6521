"""Comic pages from panel scripts: parsing (`script`), page geometry (`layout`), lettering
(`lettering`), page composition (`page`) and the generation run that ties them to a model (`book`)."""
