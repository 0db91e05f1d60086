#!/usr/bin/env bash
# Compiles the SDK and its tests with javac, then runs the test runner with java.
# BUILD_DIR sets the output directory (default: build/ next to this script). The live tests
# read FKOD_BASE_URL and the other variables that tests/sdk/test_java_sdk.py sets, and are
# skipped without them.
set -euo pipefail
cd "$(dirname "$0")"
sdk_dir=$(pwd)
build_dir=${BUILD_DIR:-"$sdk_dir/build"}

rm -rf "$build_dir"
mkdir -p "$build_dir/classes" "$build_dir/test-classes"

javac --release 17 -Xlint:all -Werror -d "$build_dir/classes" \
  $(find src/main/java -name '*.java')
javac --release 17 -Xlint:all -Werror -d "$build_dir/test-classes" \
  -cp "$build_dir/classes" $(find src/test/java -name '*.java')

java -Dfkod.sdk.dir="$sdk_dir" -cp "$build_dir/classes:$build_dir/test-classes" \
  com.fkod.sdk.TestRunner "$@"
