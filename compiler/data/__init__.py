"""The user's data as the build reads it: input files, and stable splits of them."""
