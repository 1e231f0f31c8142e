"""What every DVC stage shares: the params schema, file paths, one-line errors, device / precision / seeding."""
