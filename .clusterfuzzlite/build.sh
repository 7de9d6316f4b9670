#!/bin/bash -eu
# ClusterFuzzLite's build step: the same script OSS-Fuzz runs.
exec "$SRC/parallels-image/fuzz/oss-fuzz/build.sh"
