"""One module per stage, each with NAME, VERSION, READS, NEEDS and one public run()."""
