"""Running the stage list: keys, the cache, the build lock, garbage collection, events, artifact files."""
