"""Where a project lives: the FiftyOne dataset, its folder, labels with their history, imports,
archives."""
