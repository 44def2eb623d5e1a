"""On-disk layout shared by the generator and the loaders (see README.md)."""
BENCHMARK_DIR = "synthreid"     # under the datasets root
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
FILE_PATTERN = "{pid:04d}_c{cam}_t{time}_{index:04d}.png"  # cam, time 1-based (as in Market)
MARKER = "COMPLETE"             # written last; holds the config
FORMAT_VERSION = 1
