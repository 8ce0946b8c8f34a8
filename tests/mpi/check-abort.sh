#!/usr/bin/env bash
# Runs a program that throws on rank 1 under a timeout and checks that the whole job
# ends non-zero, promptly, with the exception's message.
# usage: check-abort.sh SECONDS MPIEXEC... PROGRAM   (the command line to run)
set -uo pipefail
limit=$1
shift
output=$(timeout "$limit" "$@" 2>&1)
status=$?
echo "$output"
if ((status == 124)); then echo "FAIL: the job did not end within ${limit}s (a rank was left waiting)"; exit 1; fi
if ((status == 0)); then echo "FAIL: the job exited 0 although rank 1 threw"; exit 1; fi
if ! grep -q "deliberate failure on rank 1" <<<"$output"; then echo "FAIL: the exception's message was not printed"; exit 1; fi
if grep -q "must not be reached" <<<"$output"; then echo "FAIL: a rank ran past the failure"; exit 1; fi
echo "PASS: exit status $status, message printed"
