#!/usr/bin/env bash
# moe-run as the README describes it: the flags it adds, its argument errors, and a
# real two-rank run. usage: test-moe-run.sh MOE_RUN MPI_TEST_BINARY
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../support/checks.sh"
moe_run=$1
mpi_tests=$2
contains() { grep -q -- "$2" <<<"$1"; }
lacks() { ! grep -q -- "$2" <<<"$1"; }

cores=$(nproc)
over=$("$moe_run" -np $((cores + 1)) --dry-run prog arg)
fits=$("$moe_run" -np 1 --dry-run prog arg)
check "oversubscribes when ranks exceed cores" contains "$over" "--oversubscribe"
check "does not oversubscribe when ranks fit" lacks "$fits" "--oversubscribe"
check "gives each rank its share of the cores" contains "$over" "OMP_NUM_THREADS=1"
check "binds to cores when ranks fit" contains "$fits" "--bind-to core"
if [[ $(id -u) == 0 ]]; then
  check "adds the run-as-root flag as root" contains "$fits" "--allow-run-as-root"
else
  check "no run-as-root flag for other users" lacks "$fits" "--allow-run-as-root"
fi
pass=$("$moe_run" -np 2 --dry-run --mca btl self,vader -- prog -- x)
check "passes mpirun arguments before --" contains "$pass" "--mca btl self"
check "keeps the program's own --" contains "$pass" "prog -- x"

# Open MPI 4 or older: each job's session files under a base of its own, so that jobs
# starting side by side do not race to make one shared directory.
if mpirun --version 2>/dev/null | grep -q "Open MPI) [1-4]\."; then
  sessions="${OMPI_MCA_orte_tmpdir_base:-${TMPDIR:-/tmp}}/moe-run.$(id -u)"
  check "gives the job a session directory base of its own" contains "$fits" "--mca orte_tmpdir_base $sessions/"
  own=$("$moe_run" -np 1 --dry-run --mca orte_tmpdir_base /elsewhere -- prog)
  check "... unless mpirun's arguments name one" test "$(grep -o orte_tmpdir_base <<<"$own" | wc -l)" = 1
  check "... or name other hosts" lacks "$("$moe_run" -np 2 --dry-run -H a,b -- prog)" "orte_tmpdir_base"
  check "... or run in a batch allocation" lacks "$(SLURM_JOB_ID=7 "$moe_run" -np 2 --dry-run prog)" "orte_tmpdir_base"
  first=$("$moe_run" -np 1 bash -c 'echo "$OMPI_FILE_LOCATION"' 2>&1)
  check "a real job keeps its session files there" contains "$first" "^$sessions/[0-9]*/"
  ended=${first#"$sessions/"} && ended="$sessions/${ended%%/*}"
  "$moe_run" -np 1 true
  check "the next job removes the base of one that has ended" test ! -e "$ended"
fi

bad=$("$moe_run" -np zero prog 2>&1); status=$?
check "rejects a bad -np with a clear message" test "$status" = 2 -a -n "$(grep -- "-np = 'zero'" <<<"$bad")"
bad=$("$moe_run" -np 2 --mca x prog 2>&1); status=$?
check "rejects mpirun arguments without --" test "$status" = 2 -a -n "$(grep -- "before a '--'" <<<"$bad")"

run=$("$moe_run" -np 2 "$mpi_tests" --gtest_filter='Communicator.*' 2>&1); status=$?
check "runs a real 2-rank job" test "$status" = 0 -a -n "$(grep -- "on 2 rank(s)" <<<"$run")"
((failures == 0)) || { echo "$run"; exit 1; }
