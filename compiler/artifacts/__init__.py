"""What one stage hands the next: each artifact file's typed record, its writer and its reader, one module
per producing stage. Stages and the build read each other's outputs only through these; a reader refuses a
file of a schema version it does not know."""
