"""One module per stage: its run(), and STAGE, the record of what it reads, needs and produces."""
